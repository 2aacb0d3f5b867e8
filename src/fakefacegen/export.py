"""Export a generator to ONNX and TorchScript, each checked against PyTorch on the same noise.

Both files map noise ``z`` float32 (batch, z_dim) to ``image`` float32 (batch, 3, R, R) in [-1, 1]
(NCHW; ``(image + 1) * 127.5`` gives pixel values), with a dynamic batch axis. Next to each file,
``<name>.json`` records the shapes, versions and the largest absolute difference from PyTorch
measured after export.

ONNX uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): it needs only
``onnx`` for the check and ``onnxruntime`` to run, while the dynamo exporter also needs
``onnxscript``; a plain conv-transpose/BatchNorm/ReLU stack gains nothing from it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .atomic import atomic_save, atomic_write_text, remove_stale_temps

if TYPE_CHECKING:
    import torch

    from .generate import LoadedGenerator
    from .generator_network import GeneratorNetwork

FORMATS = ("onnx", "torchscript")
ONNX_FILE = "generator.onnx"
TORCHSCRIPT_FILE = "generator.torchscript.pt"
DEFAULT_OPSET = 17
# Batch sizes for the parity check: none equals the batch size traced at export, so the check
# also proves the batch axis is dynamic.
CHECK_BATCHES = (1, 5)
TRACE_BATCH = 2


class MissingDependencyError(ImportError, RuntimeError):
    """An optional package is missing; the message says what to install."""


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise MissingDependencyError(
            f"ONNX export needs the onnx and onnxruntime packages ({e.name} is missing): "
            f"pip install fakefacegen[export]"
        ) from None
    return onnx, onnxruntime


def _export_module(G: LoadedGenerator) -> torch.nn.Module:
    """A CPU float32 copy of G's network without the Python shape check (it would be traced as a constant),
    its output clamped to [-1, 1] as pixels are (the style family's output is not squashed by a tanh)."""
    import copy

    import torch

    class _Exported(torch.nn.Module):
        def __init__(self, net: GeneratorNetwork):
            super().__init__()
            self.net = net

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.net.traceable_forward(z).clamp(-1.0, 1.0)

    net = copy.deepcopy(G.net).to("cpu", torch.float32).eval().requires_grad_(False)
    return _Exported(net).eval()


def _reference(G: LoadedGenerator, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(noise, output of G's own PyTorch network) pairs on CPU float32 for each check batch size."""
    import copy

    import torch

    from .generate import noise

    module = copy.deepcopy(G.net).to("cpu", torch.float32).eval()
    pairs = []
    for i, n in enumerate(CHECK_BATCHES):
        z = noise(n, G.z_dim, seed, start=100 * i)
        with torch.no_grad():
            pairs.append((z.numpy(), module(z).clamp(-1.0, 1.0).numpy()))
    return pairs


def _describe(G: LoadedGenerator, fmt: str, path: Path, diff: float, seed: int, **extra: Any) -> dict[str, Any]:
    import torch

    return {
        "format": fmt,
        "file": path.name,
        "source": G.source,
        "resolution": G.resolution,
        "z_dim": G.z_dim,
        "input": {"name": "z", "shape": ["batch", G.z_dim], "dtype": "float32"},
        "output": {
            "name": "image",
            "shape": ["batch", 3, G.resolution, G.resolution],
            "dtype": "float32",
            "range": [-1.0, 1.0],
            "layout": "NCHW",
        },
        "check": {"batch_sizes": list(CHECK_BATCHES), "seed": seed, "max_abs_diff": diff},
        "torch_version": torch.__version__,
        "fakefacegen_version": __version__,
        **extra,
    }


def _write_json(info: dict[str, Any], path: Path) -> Path:
    p = path.with_name(path.name.split(".")[0] + f".{info['format']}.json")
    return atomic_write_text(p, json.dumps(info, indent=2) + "\n")


def _checked(path: Path, diff: float, tolerance: float, what: str) -> None:
    if not np.isfinite(diff) or diff > tolerance:
        raise RuntimeError(f"{path}: {what} output differs from PyTorch by {diff:.3g} (tolerance {tolerance:g})")


def export_onnx(
    G: LoadedGenerator, path: str | Path, *, opset: int = DEFAULT_OPSET, seed: int = 0, tolerance: float = 1e-4
) -> dict[str, Any]:
    """Write G as ONNX, run it in onnxruntime against PyTorch and return the report (also written as JSON).

    Raises MissingDependencyError without onnx/onnxruntime, RuntimeError if the outputs differ by
    more than ``tolerance``.
    """
    import torch

    onnx, ort = _require_onnx()
    path = Path(path)
    module = _export_module(G)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            # The TorchScript-based exporter is deprecated in favour of dynamo (which needs onnxscript).
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (torch.zeros(TRACE_BATCH, G.z_dim),),
                str(tmp),
                dynamo=False,
                input_names=["z"],
                output_names=["image"],
                opset_version=opset,
                dynamic_axes={"z": {0: "batch"}, "image": {0: "batch"}},
            )
        onnx.checker.check_model(str(tmp))

    atomic_save(path, write)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diff = max(float(np.abs(sess.run(None, {"z": z})[0] - ref).max()) for z, ref in _reference(G, seed))
    info = _describe(
        G, "onnx", path, diff, seed, opset=opset, onnx_version=onnx.__version__, onnxruntime_version=ort.__version__
    )
    info["json"] = str(_write_json(info, path))
    _checked(path, diff, tolerance, "ONNX Runtime")
    return info


def export_torchscript(
    G: LoadedGenerator, path: str | Path, *, seed: int = 0, tolerance: float = 1e-5
) -> dict[str, Any]:
    """Write G as a traced TorchScript module, reload it, compare with PyTorch and return the report."""
    import torch

    path = Path(path)
    module = _export_module(G)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export; still supported
        # check_trace=False: its comparison imports torch.distributed (seconds); the reloaded file is checked below.
        traced = torch.jit.trace(module, torch.zeros(TRACE_BATCH, G.z_dim), check_trace=False)
        atomic_save(path, lambda tmp: torch.jit.save(traced, str(tmp)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        diff = max(float(np.abs(loaded(torch.from_numpy(z)).numpy() - ref).max()) for z, ref in _reference(G, seed))
    info = _describe(G, "torchscript", path, diff, seed)
    info["json"] = str(_write_json(info, path))
    _checked(path, diff, tolerance, "TorchScript")
    return info


def parse_formats(fmt: str) -> tuple[str, ...]:
    """'onnx' | 'torchscript' | 'both' (or a comma list) -> formats to write."""
    names = [f.strip().lower() for f in str(fmt).split(",") if f.strip()]
    out: list[str] = []
    for f in names:
        for g in FORMATS if f == "both" else (f,):
            if g not in FORMATS:
                raise ValueError(f"--format must be onnx, torchscript or both, got {fmt!r}")
            if g not in out:
                out.append(g)
    if not out:
        raise ValueError(f"--format must be onnx, torchscript or both, got {fmt!r}")
    return tuple(out)


def export_model(
    source: str | Path | None,
    out: str | Path,
    formats: tuple[str, ...] | str = "onnx",
    *,
    opset: int = DEFAULT_OPSET,
    which: str = "latest",
) -> dict[str, dict[str, Any]]:
    """Export a model (bundled, run directory, .pt or .safetensors) into ``out``; reports by format."""
    from .generate import load_generator

    formats = parse_formats(formats) if isinstance(formats, str) else tuple(formats)
    if "onnx" in formats:
        _require_onnx()  # fail before writing anything
    G = load_generator(source, device="cpu", which=which)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # the temp files of an export that was killed here
    reports = {}
    if "onnx" in formats:
        reports["onnx"] = export_onnx(G, out / ONNX_FILE, opset=opset)
    if "torchscript" in formats:
        reports["torchscript"] = export_torchscript(G, out / TORCHSCRIPT_FILE)
    return reports
