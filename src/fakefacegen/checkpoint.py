"""Checkpoints: atomic writes, safe loads, clear errors.

A training checkpoint is a plain dict of tensors, state_dicts and primitives (G, D, EMA G, both
optimisers, step, images seen, config, version), saved with ``torch.save`` and loaded with
``weights_only=True``, so a file that would run code when unpickled is refused, not executed.
A generator-only export is a safetensors file whose metadata carries the model config.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from . import __version__

FORMAT = "fakefacegen-checkpoint"
FORMAT_VERSION = 1
CKPT_RE = re.compile(r"^ckpt-(\d{8})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and the problem."""


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)``, fsync, then rename over ``path``: readers see the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write a training checkpoint atomically."""
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, "fakefacegen_version": __version__, **state}
    atomic_write(Path(path), lambda p: torch.save(state, p))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a training checkpoint; raises CheckpointError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe content"
        raise CheckpointError(f"{path}: refused to load: the file contains objects a weights-only load does not "
                              f"allow, so it may run code ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {msg[:160]})") from None
    check_format(state, path)
    return state


def check_format(state: Any, path: Path | str) -> None:
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a FakeFaceGen checkpoint (no '{FORMAT}' marker)")
    v = state.get("format_version")
    if not isinstance(v, int) or v > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {v} is newer than this FakeFaceGen "
                              f"({__version__}) understands (<= {FORMAT_VERSION}); upgrade fakefacegen")
    for key in ("config", "G", "step"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Step checkpoints of a run, oldest first."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if CKPT_RE.match(p.name)), key=lambda p: p.name)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"ckpt-{step:08d}.pt"


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` step checkpoints (keep=0 keeps all)."""
    if keep <= 0:
        return
    for p in list_checkpoints(run_dir)[:-keep]:
        p.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Generator-only export (safetensors)


def save_generator(g_state: dict[str, torch.Tensor], model_cfg: dict[str, Any], path: str | Path, *,
                   dtype: torch.dtype = torch.float32, meta: dict[str, Any] | None = None) -> None:
    """Write G's weights (floats cast to ``dtype``) and its config as safetensors, atomically."""
    from safetensors.torch import save_file

    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous().cpu() for k, v in g_state.items()}
    metadata = {"format": "fakefacegen-generator", "format_version": str(FORMAT_VERSION),
                "model": json.dumps(model_cfg), "meta": json.dumps(meta or {}), "fakefacegen_version": __version__}
    atomic_write(Path(path), lambda p: save_file(tensors, str(p), metadata=metadata))


def load_generator_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(state_dict in float32, model config dict, meta dict) from a safetensors generator file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such generator file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:160]})") from None
    if metadata.get("format") != "fakefacegen-generator":
        raise CheckpointError(f"{path}: not a FakeFaceGen generator file (no 'fakefacegen-generator' metadata)")
    if int(metadata.get("format_version", "0")) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: generator format version {metadata.get('format_version')} is newer than "
                              f"this FakeFaceGen understands; upgrade fakefacegen")
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    return state, json.loads(metadata["model"]), json.loads(metadata.get("meta", "{}"))
