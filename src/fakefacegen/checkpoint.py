"""Checkpoints: atomic writes, safe loads, clear errors.

A training checkpoint is a plain dict of tensors, state_dicts and primitives (G, D, EMA G, both
optimisers, step, images seen, config, version), saved with ``torch.save`` and loaded with
``weights_only=True``, so a file that would run code when unpickled is refused, not executed.
A generator-only export is a safetensors file whose metadata carries the model config.

Both are written with :func:`atomic.atomic_write` (a reader, or a run resumed after ``kill -9``,
sees the old file or the new one, never a torn one); temp files of a writer that was killed are
removed by the next save into the same directory.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import warnings
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .atomic import atomic_write, remove_stale_temps
from .rundir import CKPT_RE, RunDir

FORMAT = "fakefacegen-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and the problem."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write a training checkpoint atomically (removing temp files of killed writers first)."""
    path = Path(path)
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, "fakefacegen_version": __version__, **state}
    remove_stale_temps(path.parent)
    atomic_write(path, lambda f: torch.save(state, f), slow_write_hook=True)


def sniff(path: str | Path) -> str:
    """What a file looks like from its first bytes: 'empty', 'zip' (torch.save), 'pickle',
    'safetensors' or 'unknown'."""
    with open(path, "rb") as f:
        head = f.read(16)
        size = os.fstat(f.fileno()).st_size
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    return "unknown"


def _first_line(e: BaseException) -> str:
    msg = str(e).strip()
    return (msg.splitlines()[0] if msg else type(e).__name__)[:160]


def _sniff_existing(path: Path, what: str) -> str:
    """:func:`sniff` of a file that must exist; CheckpointError naming ``what`` otherwise."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what}")
    try:
        return sniff(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a training checkpoint; raises CheckpointError with a one-line reason.

    Nothing in the file is executed: only tensors and plain containers are unpickled.
    """
    path = Path(path)
    kind = _sniff_existing(path, "checkpoint file")
    if kind == "empty":
        raise CheckpointError(f"{path}: not a readable checkpoint (empty file, 0 bytes)")
    if kind == "safetensors":
        raise CheckpointError(
            f"{path}: a safetensors file (a generator export?), not a training checkpoint; "
            f"give it a .safetensors name to load it as a generator"
        )
    if kind == "unknown":
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (unrecognised content)")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": we report problems ourselves
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if m:
            raise CheckpointError(
                f"{path}: refused to load: unpickling it would call {m.group(1)}, which could "
                f"run code; nothing was executed"
            ) from None
        if kind == "pickle":
            raise CheckpointError(
                f"{path}: refused to load: a plain Python pickle, not a weights-only PyTorch "
                f"checkpoint (unpickling it could run code); nothing was executed"
            ) from None
        m = re.search(r"WeightsUnpickler error: \s*(.+)", text)
        raise CheckpointError(
            f"{path}: not a readable checkpoint (corrupt: {(m.group(1) if m else _first_line(e))[:160]})"
        ) from None
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError, ... for damaged files
        msg = _first_line(e).split(". ")[0]
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {msg})") from None
    check_format(state, path)
    return state


def check_format(state: Any, path: Path | str) -> None:
    """Raise CheckpointError unless ``state`` is a FakeFaceGen training checkpoint this version reads."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a FakeFaceGen checkpoint (no '{FORMAT}' marker)")
    v = state.get("format_version")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise CheckpointError(f"{path}: invalid checkpoint format version {v!r}")
    if v > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {v} is newer than this FakeFaceGen "
            f"({__version__}) understands (<= {FORMAT_VERSION}); upgrade fakefacegen"
        )
    for key in ("config", "G", "step"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
    cfg = state["config"]
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise CheckpointError(f"{path}: checkpoint config has no model section")
    step = state["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{path}: invalid step {step!r}")
    for net in ("G", "D", "G_ema"):
        sd = state.get(net)
        if sd is None and net != "G":
            continue
        if not isinstance(sd, dict) or not all(
            isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in sd.items()
        ):
            raise CheckpointError(f"{path}: '{net}' is not a state_dict of tensors")
        for name, t in sd.items():
            # A checkpoint with NaN/Inf weights is of no use for sampling or resuming.
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise CheckpointError(f"{path}: {net} weight {name} contains NaN/Inf")


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Step checkpoints of a run, oldest first."""
    d = RunDir(run_dir).checkpoints
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if CKPT_RE.match(p.name)), key=lambda p: p.name)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return RunDir(run_dir).checkpoint(step)


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` step checkpoints (keep=0 keeps all)."""
    if keep <= 0:
        return
    for p in list_checkpoints(run_dir)[:-keep]:
        p.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Generator-only export (safetensors)


def save_generator(
    g_state: dict[str, torch.Tensor],
    model_cfg: dict[str, Any],
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    meta: dict[str, Any] | None = None,
) -> None:
    """Write G's weights (floats cast to ``dtype``) and its config as safetensors, atomically."""
    from safetensors.torch import save

    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous().cpu() for k, v in g_state.items()}
    metadata = {
        "format": "fakefacegen-generator",
        "format_version": str(FORMAT_VERSION),
        "model": json.dumps(model_cfg),
        "meta": json.dumps(meta or {}),
        "fakefacegen_version": __version__,
    }
    path = Path(path)
    remove_stale_temps(path.parent)
    atomic_write(path, lambda f: f.write(save(tensors, metadata=metadata)), slow_write_hook=True)


def load_generator_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(state_dict in float32, model config dict, meta dict) from a safetensors generator file."""
    from safetensors import safe_open

    path = Path(path)
    kind = _sniff_existing(path, "generator file")
    if kind in ("zip", "pickle"):
        raise CheckpointError(f"{path}: a PyTorch checkpoint, not a safetensors generator file; give it a .pt name")
    if kind != "safetensors":
        raise CheckpointError(
            f"{path}: not a readable safetensors file "
            f"({'empty file, 0 bytes' if kind == 'empty' else 'unrecognised content'})"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # SafetensorError, OSError, ... for damaged files
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or corrupt: {_first_line(e)})"
        ) from None
    if metadata.get("format") != "fakefacegen-generator":
        raise CheckpointError(f"{path}: not a FakeFaceGen generator file (no 'fakefacegen-generator' metadata)")
    v = metadata.get("format_version", "")
    if not v.isdigit():
        raise CheckpointError(f"{path}: invalid generator format version {v!r}")
    if int(v) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: generator format version {v} is newer than this FakeFaceGen "
            f"({__version__}) understands (<= {FORMAT_VERSION}); upgrade fakefacegen"
        )
    try:
        model, meta = json.loads(metadata["model"]), json.loads(metadata.get("meta") or "{}")
    except (KeyError, ValueError):
        raise CheckpointError(f"{path}: generator file has no valid model config in its metadata") from None
    if not isinstance(model, dict):
        raise CheckpointError(f"{path}: generator file has no valid model config in its metadata")
    for name, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{path}: weight {name} contains NaN/Inf")
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    return state, model, meta if isinstance(meta, dict) else {}
