"""Image sources for evaluation: a prepared dataset, a folder, an array, or a generator callable.

Selection of ``n`` images from a finite source (dataset, folder, array) is deterministic: all images
when ``n`` is None or equals the count, otherwise the sorted first ``n`` indices of
``np.random.default_rng(seed).permutation(count)`` (a spread-out sample, not the first ``n`` files,
which in CelebA are ordered by identity). A generator is called once as ``sample(n, seed)``.

A folder is read as is (sorted file names; PNG, JPEG, WebP, BMP), each image at its own size: the
resize to 299 in the feature extractor handles any size, but a non-square image is stretched, so crop
faces the same way as the real data first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..dataset_format import IMAGES_FILE, is_dataset_dir, map_images, read_manifest

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SELECTION = "sorted(default_rng(seed).permutation(count)[:n])"


def select_indices(count: int, n: int | None, seed: int = 0) -> np.ndarray | None:
    """Indices of the ``n`` images drawn from ``count`` (None = all, in order)."""
    if n is None or n == count:
        return None
    if n > count:
        raise ValueError(f"asked for n={n} images but the source has only {count}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return np.sort(np.random.default_rng(seed).permutation(count)[:n])


def pixels_sha256(images: np.ndarray | Rows, chunk: int = 1024) -> str:
    """sha256 over the shape and the raw bytes of a uint8 image array (streamed for memmaps)."""
    h = hashlib.sha256(repr(tuple(images.shape)).encode())
    for i in range(0, len(images), chunk):
        h.update(np.ascontiguousarray(images[i : i + chunk]).tobytes())
    return h.hexdigest()


class Rows:
    """Lazy view of ``array[indices]``: slicing reads only those rows (keeps a memmap on disk)."""

    def __init__(self, array: np.ndarray, indices: np.ndarray):
        self.array, self.indices = array, indices
        self.shape = (len(indices), *array.shape[1:])
        self.dtype = array.dtype

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: slice) -> np.ndarray:
        return np.asarray(self.array[self.indices[item]])


@dataclass
class Source:
    """A resolved image source.

    ``images`` is a uint8 array/memmap or an iterable of batches; ``content_key`` identifies the
    selected pixels for the real-statistics cache (None = do not cache); ``check`` is extra
    information stored with a cache entry and validated on reuse.
    """

    kind: str
    count: int
    images: Any
    describe: dict[str, Any]
    content_key: str | None = None
    check: dict[str, Any] = field(default_factory=dict)
    validate: Callable[[dict[str, Any]], bool] | None = None


def _dataset_source(root: Path, n: int | None, seed: int) -> Source:
    # Read leniently: the statistics need only the pixels and, where present, the count and content_hash.
    manifest = read_manifest(root)
    arr = map_images(root)
    if "count" in manifest and int(manifest["count"]) != len(arr):
        raise ValueError(f"{root}: manifest count {manifest['count']} != {len(arr)} images in images.npy")
    idx = select_indices(len(arr), n, seed)
    images = arr if idx is None else Rows(arr, idx)
    content_hash = manifest.get("content_hash")
    st = (root / IMAGES_FILE).stat()
    stat = [st.st_size, st.st_mtime_ns]

    def validate(check: dict[str, Any]) -> bool:
        # The manifest hash names the data; if images.npy changed on disk since the entry was written,
        # trust only the pixels themselves (a stale manifest must not serve stale statistics).
        if check.get("images_stat") == stat:
            return True
        return check.get("pixels_sha256") == pixels_sha256(images)

    key = f"dataset:{content_hash}" if content_hash else f"pixels:{pixels_sha256(images)}"
    source = Source(
        "dataset",
        len(images),
        images,
        {
            "kind": "dataset",
            "path": str(root),
            "content_hash": content_hash,
            "size": manifest.get("size"),
            "selection": SELECTION if idx is not None else "all",
            "seed": seed if idx is not None else None,
        },
        content_key=key,
        validate=validate,
    )
    # Computed lazily by the cache on write (hashing is a second pass over the selected pixels).
    source.check = {"images_stat": stat, "pixels_sha256": lambda: pixels_sha256(images)}
    return source


def _iter_folder(files: list[Path], max_batch: int = 64) -> Iterator[np.ndarray]:
    from PIL import Image

    batch: list[np.ndarray] = []
    for f in files:
        with Image.open(f) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.uint8)
        if batch and (a.shape != batch[0].shape or len(batch) == max_batch):
            yield np.stack(batch)
            batch = []
        batch.append(a)
    if batch:
        yield np.stack(batch)


def _folder_source(root: Path, n: int | None, seed: int) -> Source:
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_EXTS)}) and no images.npy/manifest.json")
    idx = select_indices(len(files), n, seed)
    if idx is not None:
        files = [files[i] for i in idx]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return Source(
        "folder",
        len(files),
        _iter_folder(files),
        {
            "kind": "folder",
            "path": str(root),
            "selection": SELECTION if idx is not None else "all",
            "seed": seed if idx is not None else None,
        },
        content_key=f"files:{h.hexdigest()}",
    )


def resolve_source(obj: Any, n: int | None, seed: int = 0, *, role: str = "images") -> Source:
    """Turn a dataset dir, image folder, uint8 array or ``sample(n, seed)`` callable into a Source."""
    if isinstance(obj, (str, Path)):
        p = Path(obj).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"{role}: {p} is not a directory")
        return _dataset_source(p, n, seed) if is_dataset_dir(p) else _folder_source(p, n, seed)
    if callable(obj):
        if n is None:
            raise ValueError(f"{role}: a generator callable needs n (how many images to sample)")
        images = np.asarray(obj(n, seed))
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) != n:
            raise ValueError(
                f"{role}: sample({n}, {seed}) must return uint8 (n, H, W, 3), got {images.dtype} {images.shape}"
            )
        return Source("generator", n, images, {"kind": "generator", "seed": seed})
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        arr = obj.detach().cpu().numpy() if hasattr(obj, "detach") else obj
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"{role}: expected a uint8 (N, H, W, 3) array, got {arr.dtype} {arr.shape}")
        idx = select_indices(len(arr), n, seed)
        images = arr if idx is None else arr[idx]
        return Source(
            "array",
            len(images),
            images,
            {
                "kind": "array",
                "selection": SELECTION if idx is not None else "all",
                "seed": seed if idx is not None else None,
            },
            content_key=f"pixels:{pixels_sha256(images)}",
        )
    raise TypeError(
        f"{role}: expected a dataset/folder path, a uint8 array or a sample(n, seed) callable, got {type(obj).__name__}"
    )
