"""The prepared-dataset format: its file names and fields, validation, reading, and atomic writing.

A dataset is one directory holding two files:

``images.npy``
    uint8 array of shape ``(N, size, size, 3)``, C order, RGB (NHWC). Read it memory-mapped
    (:func:`open_dataset`, :func:`load_images`); nothing is decoded when training.
``manifest.json``
    A JSON object with at least ``format`` (:data:`FORMAT_NAME`), ``format_version``
    (:data:`FORMAT_VERSION`), ``count``, ``size`` and ``content_hash`` (sha256 of the pixel bytes in
    row order, :func:`content_hash`); ``fakefacegen prepare`` adds what it did.

Every problem with a dataset is a :class:`DatasetFormatError` whose message is one line naming the
file and the problem. Writing is atomic: a dataset is assembled in a hidden staging directory next
to its destination (:func:`staging_dir`: ``.NAME.PID.tmp-XXXX``) and renamed into place
(:func:`publish`), so a reader sees the old dataset or the new one, never a partial one. What a
killed writer leaves (its staging directory; the old dataset it had moved aside, in
``.NAME.PID.old-XXXX``) is cleaned up, or put back, by the next writer of the same destination
(:func:`recover_interrupted`), with a note on stderr. The image array's disk space is reserved
when it is created (:func:`create_images`), so a full disk is a one-line error, never a SIGBUS
in a memory-mapped write.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .atomic import (
    TMP_DIR_RE,
    NoSpaceError,
    atomic_save,
    free_bytes,
    fsync_path,
    reserve,
    space_message,
    stale_owner,
    temp_dir,
    warn,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "IMAGES_FILE",
    "MANIFEST_FILE",
    "NAMES_FILE",
    "REQUIRED_KEYS",
    "DatasetFormatError",
    "one_line",
    "content_hash",
    "is_dataset_dir",
    "is_fakefacegen_dataset",
    "read_manifest",
    "load_manifest",
    "map_images",
    "open_dataset",
    "load_images",
    "staging_dir",
    "recover_interrupted",
    "dataset_bytes",
    "no_space",
    "check_space",
    "create_images",
    "keep_rows",
    "write_manifest",
    "write_names",
    "publish",
    "write_dataset",
]

FORMAT_NAME = "fakefacegen-dataset"
FORMAT_VERSION = 1
IMAGES_FILE = "images.npy"
MANIFEST_FILE = "manifest.json"
NAMES_FILE = "names.txt"  # the source file name of each row, one per line (absent when a name is not one UTF-8 line)
REQUIRED_KEYS = ("format", "format_version", "count", "size", "content_hash")
MmapMode = Literal["r", "r+", "w+", "c"]
_HASH_ROWS = 4096  # rows hashed / copied per step, so a memory-mapped array is streamed
SPACE_MARGIN = 1 << 20  # bytes beyond the pixels a dataset needs: .npy header, manifest, file system slack
_LEGACY_TMP_RE = re.compile(r"^\.(.+)\.(tmp|old)-[A-Za-z0-9_]+$")  # staging names before the pid was in them


class DatasetFormatError(ValueError):
    """A prepared dataset directory is missing or invalid (one-line message)."""


def one_line(e: BaseException | str, limit: int = 200) -> str:
    """``e`` as a single line of at most ``limit`` characters (whitespace runs collapsed)."""
    s = " ".join(str(e).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def content_hash(images: np.ndarray) -> str:
    """sha256 hex digest of the pixel bytes in row order (streamed, so a memmap stays on disk)."""
    h = hashlib.sha256()
    for k in range(0, images.shape[0], _HASH_ROWS):
        h.update(np.ascontiguousarray(images[k : k + _HASH_ROWS]).data)
    return h.hexdigest()


# --------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------


def is_dataset_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds both files of the format (their contents are not checked)."""
    p = Path(path)
    return (p / IMAGES_FILE).is_file() and (p / MANIFEST_FILE).is_file()


def read_manifest(dataset_dir: str | os.PathLike) -> dict[str, Any]:
    """``manifest.json`` as a dict, with no check of its fields (see :func:`load_manifest` for those)."""
    mpath = Path(dataset_dir) / MANIFEST_FILE
    if not mpath.is_file():
        raise DatasetFormatError(f"{mpath}: missing (not a prepared dataset; run `fakefacegen prepare`)")
    try:
        m = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DatasetFormatError(f"{mpath}: unreadable JSON ({one_line(e, 120)})") from None
    if not isinstance(m, dict):
        raise DatasetFormatError(f"{mpath}: not a JSON object")
    return m


def is_fakefacegen_dataset(dataset_dir: str | os.PathLike) -> bool:
    """Whether ``dataset_dir`` has a readable manifest naming this format (safe to replace)."""
    try:
        return read_manifest(dataset_dir).get("format") == FORMAT_NAME
    except DatasetFormatError:
        return False


def _check_fields(m: dict[str, Any], mpath: Path) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in m]
    if missing:
        raise DatasetFormatError(f"{mpath}: missing key(s) {', '.join(missing)}")
    if m["format"] != FORMAT_NAME:
        raise DatasetFormatError(f"{mpath}: format is {m['format']!r}, expected {FORMAT_NAME!r}")
    if m["format_version"] != FORMAT_VERSION:
        raise DatasetFormatError(
            f"{mpath}: unsupported format_version {m['format_version']!r} (this version reads {FORMAT_VERSION})"
        )
    count, size = m["count"], m["size"]
    if not (isinstance(count, int) and count >= 0 and isinstance(size, int) and size > 0):
        raise DatasetFormatError(f"{mpath}: invalid count/size {count!r}/{size!r}")


def _check_images_header(ipath: Path, count: int, size: int) -> None:
    if not ipath.is_file():
        raise DatasetFormatError(f"{ipath}: missing")
    try:
        with open(ipath, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            offset = fh.tell()
    except Exception as e:
        raise DatasetFormatError(f"{ipath}: not a valid .npy file ({one_line(e, 120)})") from None
    expected = (count, size, size, 3)
    if dtype != np.uint8 or fortran or tuple(shape) != expected:
        raise DatasetFormatError(
            f"{ipath}: shape {tuple(shape)} dtype {dtype} fortran={fortran} does not match manifest "
            f"(expected {expected} uint8 C-order)"
        )
    actual_bytes = ipath.stat().st_size - offset
    if actual_bytes < count * size * size * 3:
        raise DatasetFormatError(f"{ipath}: truncated ({actual_bytes} data bytes, expected {count * size * size * 3})")


def load_manifest(dataset_dir: str | os.PathLike, *, verify: bool = False) -> dict[str, Any]:
    """Read and validate ``dataset_dir/manifest.json`` against ``images.npy``.

    Checks that both files exist, the manifest is a fakefacegen-dataset of a
    supported version, and ``images.npy`` is uint8, C order, shape
    ``(count, size, size, 3)``.  With ``verify=True`` also recomputes the
    sha256 content hash.  Raises :class:`DatasetFormatError` (one line).
    """
    d = Path(dataset_dir)
    if not d.is_dir():
        raise DatasetFormatError(f"dataset directory not found: {d}")
    m = read_manifest(d)
    _check_fields(m, d / MANIFEST_FILE)
    ipath = d / IMAGES_FILE
    _check_images_header(ipath, m["count"], m["size"])
    if verify:
        h = content_hash(np.load(ipath, mmap_mode="r"))
        if h != m["content_hash"]:
            raise DatasetFormatError(
                f"{ipath}: content hash mismatch (manifest {m['content_hash'][:12]}..., data {h[:12]}...)"
            )
    return m


def map_images(dataset_dir: str | os.PathLike, mmap_mode: MmapMode | None = "r") -> np.ndarray:
    """``images.npy`` memory-mapped (or loaded, ``mmap_mode=None``), checked to be uint8 (N, H, W, 3)."""
    path = Path(dataset_dir) / IMAGES_FILE
    try:
        arr = np.load(path, mmap_mode=mmap_mode)
    except (OSError, ValueError) as e:
        raise DatasetFormatError(f"{path}: cannot read the image array ({one_line(e, 120)})") from None
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise DatasetFormatError(f"{path}: expected uint8 (N, S, S, 3), got {arr.dtype} {arr.shape}")
    return arr


def open_dataset(dataset_dir: str | os.PathLike, mmap_mode: MmapMode | None = "r") -> tuple[dict[str, Any], np.ndarray]:
    """The validated manifest (:func:`load_manifest`) and the images (:func:`map_images`) of a dataset."""
    manifest = load_manifest(dataset_dir)
    return manifest, map_images(dataset_dir, mmap_mode)


def load_images(dataset_dir: str | os.PathLike, mmap_mode: MmapMode | None = "r") -> np.ndarray:
    """Validate the dataset (see :func:`load_manifest`) and return its images array."""
    return open_dataset(dataset_dir, mmap_mode)[1]


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------


def dataset_bytes(count: int, size: int) -> int:
    """Disk space a dataset of ``count`` images of ``size`` px needs: the pixels plus :data:`SPACE_MARGIN`."""
    return count * size * size * 3 + SPACE_MARGIN


def _du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def recover_interrupted(out: Path) -> None:
    """Clean up after killed writers of the dataset ``out`` (their pid is gone), with a note on stderr:
    delete their staging directories; put back the dataset a killed :func:`publish` had moved aside
    when ``out`` is missing (else delete it). Leftovers of a live writer are left alone; those of an
    older FakeFaceGen (no pid in the name) are ignored, with a note."""
    try:
        entries = sorted(out.parent.iterdir())
    except OSError:
        return
    for p in entries:
        m = TMP_DIR_RE.match(p.name)
        if m is None or m.group(1) != out.name:
            legacy = _LEGACY_TMP_RE.match(p.name)
            if legacy and legacy.group(1) == out.name and p.is_dir():
                warn(
                    f"{p} was left by a prepare that was killed (an older version); it is ignored: "
                    f"delete it to free {_du(p)} bytes"
                )
            continue
        if stale_owner(p) is None or not p.is_dir():
            continue
        kept = p / "d"
        if m.group(3) == "old" and not os.path.lexists(out) and is_dataset_dir(kept):
            os.replace(kept, out)
            fsync_path(out.parent)
            warn(f"{out}: put back (a writer replacing it was killed after moving it aside to {p})")
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists():
            warn(f"{p}: removed (left by a writer of {out.name} that was killed, pid {m.group(2)})")


def staging_dir(out: Path) -> Path:
    """A new hidden directory next to ``out`` in which to assemble a dataset before :func:`publish`
    (after :func:`recover_interrupted` has cleaned up what killed writers of ``out`` left)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted(out)
    return temp_dir(out)


def no_space(out: Path, needed: int) -> NoSpaceError:
    """The one-line error for a dataset ``out`` that did not fit: needed and free bytes."""
    return NoSpaceError(space_message(out, needed, free_bytes(out.parent)) + "; the dataset was not written")


def check_space(staged: Path, out: Path, needed: int) -> None:
    """Raise :func:`no_space` unless ``needed`` bytes are free where ``staged`` (the staging directory
    of ``out``) lies; called before anything big is written."""
    free = free_bytes(staged)
    if free is not None and free < needed:
        raise no_space(out, needed)


def create_images(dataset_dir: Path, count: int, size: int) -> Path:
    """Allocate ``images.npy`` for ``count`` images of ``size`` (zeros), to be filled through a memmap.

    Its disk space is reserved at once (:func:`atomic.reserve`): a disk too small is a one-line
    :class:`NoSpaceError` here, not a SIGBUS when the memory map is written."""
    path = dataset_dir / IMAGES_FILE
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, size, size, 3))
    total = arr.offset + arr.nbytes
    del arr
    reserve(path, total)
    return path


def _rewrite_header_inplace(path: Path, count: int, size: int, old_offset: int) -> bool:
    """Rewrite the .npy header for a new first-axis length; True if done in place."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf,
        {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
            "fortran_order": False,
            "shape": (count, size, size, 3),
        },
    )
    header = buf.getvalue()
    if len(header) != old_offset:
        return False
    with open(path, "r+b") as fh:
        fh.write(header)
        fh.truncate(old_offset + count * size * size * 3)
    return True


def keep_rows(path: Path, keep: np.ndarray, size: int) -> None:
    """Move the kept rows (sorted indices) of ``images.npy`` at ``path`` to the front, then shrink it."""
    arr = np.load(path, mmap_mode="r+")
    offset = arr.offset
    n_total = arr.shape[0]
    count = int(keep.size)
    if count != n_total:
        # runs of consecutive kept rows -> block moves (dst <= src, front to back)
        dst = 0
        breaks = np.flatnonzero(np.diff(keep) != 1) + 1
        for run in np.split(keep, breaks):
            if run.size == 0:
                continue
            src = int(run[0])
            if src != dst:
                step = 2048
                for k in range(0, run.size, step):
                    m = min(step, run.size - k)
                    arr[dst + k : dst + k + m] = arr[src + k : src + k + m]
            dst += run.size
        arr.flush()
    del arr
    if count != n_total and not _rewrite_header_inplace(path, count, size, offset):
        # fallback (should not happen with numpy's growth padding): rewrite the file
        def copy_kept(tmp: Path) -> None:
            src_arr = np.load(path, mmap_mode="r")
            dst_arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(count, size, size, 3))
            reserve(tmp, dst_arr.offset + dst_arr.nbytes)
            for k in range(0, count, _HASH_ROWS):
                dst_arr[k : k + _HASH_ROWS] = src_arr[k : k + _HASH_ROWS]
            dst_arr.flush()
            del dst_arr, src_arr

        atomic_save(path, copy_kept)


def write_manifest(dataset_dir: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` (indented JSON, fsync'd) into a staging directory."""
    with open(dataset_dir / MANIFEST_FILE, "w") as fh:
        json.dump(manifest, fh, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_names(dataset_dir: Path, names: Sequence[str]) -> bool:
    """Write ``names.txt`` (the source file name of each row, in row order, fsync'd) into a staging
    directory. A name that cannot be one UTF-8 line (a line break of any kind ``str.splitlines`` knows,
    e.g. U+2028, or bytes that are not UTF-8, which Python holds as surrogates): then nothing is written
    and False returned (readers rebuild the names from the manifest's sources instead)."""
    for n in names:
        if n.splitlines() != [n]:
            return False
        try:
            n.encode("utf-8")
        except UnicodeEncodeError:
            return False
    with open(dataset_dir / NAMES_FILE, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("".join(n + "\n" for n in names))
        fh.flush()
        os.fsync(fh.fileno())
    return True


def publish(staged: Path, out: Path, *, before_replace: Callable[[], None] | None = None) -> None:
    """Rename the complete dataset ``staged`` to ``out`` atomically, replacing an existing ``out``.

    An existing ``out`` is moved aside first (after ``before_replace()``, a last check that may
    raise) and deleted only once the new dataset is in place; if the rename fails it is put back.
    """
    old = None
    if out.exists():
        if before_replace is not None:
            before_replace()
        old = temp_dir(out, "old")
        os.replace(out, old / "d")
    try:
        os.replace(staged, out)
    except OSError:
        if old is not None:  # put the previous dataset back
            os.replace(old / "d", out)
        raise
    fsync_path(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_dataset(out: str | os.PathLike, images: np.ndarray, **fields: Any) -> dict[str, Any]:
    """Write uint8 ``images`` (N, S, S, 3) as a dataset at ``out`` atomically; returns the manifest.

    The manifest holds the format's own fields, then ``fields`` (e.g. ``source=...``). An existing
    ``out`` is replaced only if it is empty or a dataset of this format.
    """
    images = np.ascontiguousarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
        raise DatasetFormatError(f"{out}: expected uint8 (N, S, S, 3) images, got {images.dtype} {images.shape}")
    out_path = Path(os.path.abspath(Path(out).expanduser()))

    def replaceable() -> None:
        if any(out_path.iterdir()) and not is_fakefacegen_dataset(out_path):
            raise DatasetFormatError(f"{out_path}: exists and is not empty nor a dataset; not replaced")

    if out_path.exists() and not out_path.is_dir():
        raise DatasetFormatError(f"{out_path}: exists and is not a directory")
    if out_path.exists():
        replaceable()
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "count": int(images.shape[0]),
        "size": int(images.shape[1]),
        "dtype": "uint8",
        "layout": "NHWC RGB",
        "content_hash": content_hash(images),
        **fields,
    }
    needed = dataset_bytes(*images.shape[:2])
    staged = staging_dir(out_path)
    try:
        check_space(staged, out_path, needed)
        np.save(staged / IMAGES_FILE, images)
        fsync_path(staged / IMAGES_FILE)
        write_manifest(staged, manifest)
        publish(staged, out_path, before_replace=replaceable)
    except OSError as e:
        if e.errno == errno.ENOSPC and not isinstance(e, NoSpaceError):
            raise no_space(out_path, needed) from None
        raise
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return manifest
