"""The FID Inception-v3 run by ONNX Runtime on the CPU: the same network and weights, in fp32.

The verified TorchScript file is exported once to ONNX (``torch.onnx.export`` of the scripted module;
about 25 s) into the cache next to it, and every session built on that file is first checked against
PyTorch on a fixed probe batch: features must agree within ``PROBE_TOLERANCE`` (measured: 9e-6 on
features of magnitude ~6), so FID and KID move by far less than the 0.5% the protocol allows.
ONNX Runtime's CPU kernels (MLAS) run this network at about 2.6x PyTorch's speed on an AVX2 CPU
without native bf16 (benchmarks/bench_features.py), which is where evaluation is the wall.

Used by ``FeatureExtractor(backend="onnxruntime" | "auto")``; needs the ``export`` extra
(onnx, onnxruntime). The ONNX file is derived from third-party weights: it lives in the cache,
never in the repository.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_save
from .inception import cache_root

PROBE_TOLERANCE = 1e-3  # max |feature difference| ORT vs PyTorch on the probe batch
PROBE_SEED = 299
OPSET = 17


class OrtUnavailableError(RuntimeError):
    """onnxruntime/onnx are not installed, or the exported network does not match PyTorch's."""


def available() -> bool:
    """Whether onnxruntime and onnx can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def onnx_path_for(model: torch.nn.Module) -> Path:
    """Where the ONNX export of these weights is cached (named by a hash of the weights and torch)."""
    return cache_root() / "inception" / f"inception-{_fingerprint(model)}-torch{torch.__version__.split('+')[0]}.onnx"


def _export(model: torch.nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(2, 3, 299, 299)

    def save(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (x,),
                str(tmp),
                dynamo=False,
                input_names=["x"],
                output_names=["features"],
                dynamic_axes={"x": {0: "batch"}, "features": {0: "batch"}},
                opset_version=OPSET,
            )

    atomic_save(path, save)


class OrtFeatureNetwork(torch.nn.Module):
    """A module whose forward runs the ONNX export in ONNX Runtime: float NCHW 299x299 -> (N, 2048)."""

    def __init__(self, path: Path, threads: int):
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.path, self.threads = path, threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {"x": arr})[0])


def probe_batch() -> torch.Tensor:
    """The fixed batch every ORT session is checked on: smooth random images in [-1, 1]."""
    rng = torch.Generator().manual_seed(PROBE_SEED)
    small = torch.rand(4, 3, 8, 8, generator=rng) * 2 - 1
    return torch.nn.functional.interpolate(small, size=(299, 299), mode="bilinear", align_corners=False)


_SESSIONS: dict[tuple[str, int], OrtFeatureNetwork] = {}


def load_ort_inception(model: torch.nn.Module, threads: int) -> OrtFeatureNetwork:
    """ORT twin of ``model`` (the TorchScript Inception), exported on first use and checked on the probe
    batch; one checked session per (file, threads) in a process."""
    if not available():
        raise OrtUnavailableError(
            "the onnxruntime backend needs onnx and onnxruntime: pip install 'fakefacegen[export]'"
        )
    path = onnx_path_for(model)
    key = (str(path), threads)
    if key in _SESSIONS and path.is_file():
        return _SESSIONS[key]
    if not path.is_file():
        _export(model, path)
    try:
        net = OrtFeatureNetwork(path, threads)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        raise OrtUnavailableError(
            f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:160]}); delete the file to export it again"
        ) from None
    x = probe_batch()
    with torch.no_grad():
        diff = float((net(x) - model(x).float()).abs().max())
    if not diff <= PROBE_TOLERANCE:
        raise OrtUnavailableError(
            f"{path}: ONNX Runtime's features differ from PyTorch's by {diff:.3g} on the probe batch "
            f"(tolerance {PROBE_TOLERANCE}); delete the file to export it again, or use backend='torch'"
        )
    _SESSIONS[key] = net
    return net
