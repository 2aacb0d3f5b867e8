"""Checkpoints: atomic writes, safe loads, clear errors.

A training checkpoint is a plain dict of tensors, state_dicts and primitives (G, D, EMA G, both
optimisers, step, images seen, config, version), saved with ``torch.save`` and loaded with
``weights_only=True``, so a file that would run code when unpickled is refused, not executed.
A generator-only export is a safetensors file whose metadata carries the model config.

A file's model config decides how big a network is built, so it is checked before anything is
built: against the documented ranges (``ModelConfig.validate``) and against the shapes of the
tensors in the file (:func:`check_generator_tensors`; a safetensors header is read without loading
a tensor). A pickle that would run code or build objects other than tensors and numbers is refused
with one line that says so and that nothing in it ran.

Both are written with :func:`atomic.atomic_write` (a reader, or a run resumed after ``kill -9``,
sees the old file or the new one, never a torn one); temp files of a writer that was killed are
removed by the next save into the same directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import pickletools
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
    if _old_pickle(path):
        return "pickle"
    return "unknown"


def _old_pickle(path: str | Path, limit: int = 1 << 16) -> bool:
    """Whether the file is a protocol 0/1 pickle (no header byte): its first ``limit`` bytes parse as
    pickle instructions, up to a STOP or (a longer file) at least 16 of them. Nothing is unpickled."""
    with open(path, "rb") as f:
        data = f.read(limit)
    n = 0
    try:
        for op, _, _ in pickletools.genops(data):
            if op.name == "STOP":
                return True
            n += 1
    except Exception:  # not pickle instructions, or cut off by the limit
        pass
    return len(data) == limit and n >= 16


def _pickle_global(path: Path, limit: int = 1 << 20) -> str | None:
    """The first function or class a pickle file would call when unpickled (read, never run)."""
    with open(path, "rb") as f:
        data = f.read(limit)
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL" and isinstance(arg, str):
                return arg.replace(" ", ".")
            if op.name == "STACK_GLOBAL" and len(strings) >= 2:
                return f"{strings[-2]}.{strings[-1]}"
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:
        pass
    return None


def _refused(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: refused to load: it contains code or objects that are not plain tensors and numbers "
        f"({why}); nothing in it was run"
    )


def _unpickling_refusal(path: Path, kind: str, text: str) -> CheckpointError | None:
    """The one-line refusal for torch's weights-only UnpicklingError, or None when it is damage."""
    m = re.search(r"GLOBAL ([\w.]+)", text)
    if m:
        return _refused(path, f"unpickling it would call {m.group(1)}")
    name = _pickle_global(path) if kind == "pickle" else None
    if name:
        return _refused(path, f"unpickling it would call {name}")
    m = re.search(r"Unsupported operand (\d+)", text)
    if m:
        code = int(m.group(1))
        op = next((o.name for o in pickletools.opcodes if ord(o.code[0]) == code), f"#{code}")
        return _refused(path, f"pickle instruction {op}, which tensor files do not use")
    if kind == "pickle":
        return _refused(path, "a plain Python pickle, not a PyTorch checkpoint")
    m = re.search(r"WeightsUnpickler error: \s*(.+)", text)
    if m and "Weights only load failed" in text and not re.search(r"truncat|EOF|corrupt", m.group(1), re.I):
        detail = re.split(r"\. |; ", m.group(1))[0]
        return _refused(path, re.sub(r"weights_only\S*|add_safe_globals\S*", "", detail).strip()[:120])
    return None


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
        refusal = _unpickling_refusal(path, kind, text)
        if refusal is not None:
            raise refusal from None
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
        if net != "D":  # G and its EMA copy: the shapes the config claims (D follows the same fields)
            check_generator_tensors(cfg["model"], {k: tuple(t.shape) for k, t in sd.items()}, path)
        for name, t in sd.items():
            # A checkpoint with NaN/Inf weights is of no use for sampling or resuming.
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise CheckpointError(f"{path}: {net} weight {name} contains NaN/Inf")


# --------------------------------------------------------------------------------------------
# A file's model config against its tensors, before a network is built


def generator_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """The state_dict shapes of the generator a (validated) ``ModelConfig`` builds, computed without
    building it (``tests/test_export.py`` checks them against the networks of models.py/stylegan.py)."""
    z, r, w = model.z_dim, model.resolution, model.width
    out: dict[str, tuple[int, ...]] = {}
    if model.family == "style":
        ch = {4 * 2**i: min(w * (r // (4 * 2**i)), model.max_width) for i in range(int(math.log2(r)) - 1)}
        out["const"], out["w_avg"] = (ch[4], 4, 4), (z,)
        for i in range(model.mapping_layers):
            out[f"mapping.net.{i}.weight"], out[f"mapping.net.{i}.bias"] = (z, z), (z,)

        def modulated(name: str, c_in: int, c_out: int, k: int, noise: bool = False) -> None:
            out[f"{name}.weight"], out[f"{name}.bias"] = (c_out, c_in, k, k), (c_out,)
            out[f"{name}.affine.weight"], out[f"{name}.affine.bias"] = (c_in, z), (c_in,)
            if noise:
                out[f"{name}.noise_strength"] = ()

        res = sorted(ch)
        noise = model.noise_inputs
        for b, (a, c) in enumerate(zip([4, *res[:-1]], res)):
            if b:
                modulated(f"blocks.{b}.conv0", ch[a], ch[c], 3, noise)
            modulated(f"blocks.{b}.conv1", ch[c], ch[c], 3, noise)
            modulated(f"blocks.{b}.torgb", ch[c], 3, 1)
        return out
    n = int(math.log2(r)) - 2
    chans = [w * 2 ** (n - 1 - i) for i in range(n)]
    k = 5 if model.arch == "reference" else 4
    convs = [(z, chans[0], 4), *((a, b, k) for a, b in zip(chans[:-1], chans[1:])), (chans[-1], 3, k)]
    for i, (c_in, c_out, kk) in enumerate(convs):
        out[f"net.{3 * i}.weight"] = (c_in, c_out, kk, kk)
        if i < len(convs) - 1:  # a BatchNorm after every layer but the last
            for buf in ("weight", "bias", "running_mean", "running_var"):
                out[f"net.{3 * i + 1}.{buf}"] = (c_out,)
            out[f"net.{3 * i + 1}.num_batches_tracked"] = ()
    return out


def _inferred(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """The model fields that the tensors of a generator file show (those it shows unambiguously)."""
    got: dict[str, Any] = {}
    if "const" in shapes or "mapping.net.0.weight" in shapes:
        got["family"] = "style"
        blocks = {int(m.group(1)) for k in shapes if (m := re.match(r"blocks\.(\d+)\.", k))}
        if blocks:
            got["resolution"] = 4 * 2 ** max(blocks)
        if len(shapes.get("w_avg", ())) == 1:
            got["z_dim"] = shapes["w_avg"][0]
        got["mapping_layers"] = sum(1 for k in shapes if re.fullmatch(r"mapping\.net\.\d+\.weight", k))
        return got
    got["family"] = "dcgan"
    convs = sorted(
        (int(m.group(1)), shapes[k])
        for k in shapes
        if (m := re.fullmatch(r"net\.(\d+)\.weight", k)) and len(shapes[k]) == 4
    )
    if convs:
        got["resolution"] = 2 ** (len(convs) + 1)
        got["z_dim"] = convs[0][1][0]
        last = convs[-1][1]
        got["width"] = last[0]
        if len(convs) > 1:
            got["arch"] = {5: "reference", 4: "tutorial"}.get(last[2], f"kernel {last[2]}")
    return got


def check_generator_tensors(model: Any, shapes: dict[str, tuple[int, ...]], path: str | Path) -> None:
    """Check a file's model config (a dict) against the documented ranges and against the shapes of
    the file's tensors, before any network is built; CheckpointError naming the file and the field."""
    from .config import ConfigError, ModelConfig

    if not isinstance(model, dict):
        raise CheckpointError(f"{path}: the stored model config is not a JSON object")
    try:
        mc = ModelConfig(**model)
        mc.validate()
    except TypeError as e:  # an unknown field, or a value of the wrong type
        raise CheckpointError(f"{path}: the stored model config is invalid ({_first_line(e)})") from None
    except ConfigError as e:
        raise CheckpointError(f"{path}: the stored model config is invalid: {_first_line(e)}") from None
    got = _inferred(shapes)
    claimed = {**dataclasses.asdict(mc), "family": mc.family}
    for field in ("family", "resolution", "z_dim", "mapping_layers", "width", "arch"):
        if field not in got or got[field] == claimed[field] or (field == "mapping_layers" and mc.family != "style"):
            continue
        if field == "family":
            raise CheckpointError(
                f"{path}: model.arch is {mc.arch!r} in its config, but its tensors are those of a "
                f"{got['family']} generator (the config does not describe the weights in the file)"
            )
        raise CheckpointError(
            f"{path}: model.{field} is {claimed[field]!r} in its config, but its tensors are of {field} "
            f"{got[field]!r} (the config does not describe the weights in the file)"
        )
    expected = generator_shapes(mc)
    for key, shape in expected.items():
        if key not in shapes:
            raise CheckpointError(
                f"{path}: no tensor {key}, which a generator of its config has (the file is incomplete)"
            )
        if tuple(shapes[key]) != shape:
            raise CheckpointError(
                f"{path}: tensor {key} is {list(shapes[key])}, but a generator of its config "
                f"(model.width {mc.width}, model.max_width {mc.max_width}) has {list(shape)}"
            )
    extra = sorted(set(shapes) - set(expected))
    if extra:
        raise CheckpointError(f"{path}: tensor {extra[0]} is not part of a generator of its config")


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
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # the header only
            model, meta = _generator_metadata(metadata, path)
            check_generator_tensors(model, shapes, path)  # before a tensor is loaded or a network built
            state = {k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as e:  # SafetensorError, OSError, ... for damaged files
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or corrupt: {_first_line(e)})"
        ) from None
    for name, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{path}: weight {name} contains NaN/Inf")
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    return state, model, meta


def _generator_metadata(metadata: dict[str, str], path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model config, meta) from a generator file's safetensors metadata; CheckpointError otherwise."""
    if metadata.get("format") != "fakefacegen-generator":
        raise CheckpointError(f"{path}: not a FakeFaceGen generator file (no 'fakefacegen-generator' metadata)")
    v = metadata.get("format_version", "")
    if not v.isdigit():
        raise CheckpointError(f"{path}: invalid generator format version {v[:20]!r}")
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
    return model, meta if isinstance(meta, dict) else {}
