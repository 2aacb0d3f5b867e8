"""Turn a folder or .zip of face photos into a ready-to-train dataset directory.

The output directory holds two files:

``images.npy``
    uint8 array of shape ``(N, size, size, 3)``, C order, RGB.  Open it with
    ``np.load(path, mmap_mode="r")`` (or :func:`load_images`).  Row order is the
    sorted relative path of each source file (sources of a list in the order
    given), independent of the number of workers.
``manifest.json``
    What was done (see :func:`prepare_dataset` and the README section).

Processing follows the CelebA convention: centre square crop (side = shorter
side, integer offsets ``(w - side) // 2``), then an antialiased resize to
``size`` with Pillow's LANCZOS filter.  JPEGs are decoded at a reduced DCT
scale (Pillow "draft" mode, 1/2, 1/4 or 1/8) whenever the decoded crop stays at
least ``size`` pixels wide, so the LANCZOS step still downsamples; the crop box
is carried over to the reduced image with sub-pixel precision.  Draft output is
not bit-identical to a full decode (libjpeg's scaled IDCT replaces part of the
downsampling): on CelebA 178x218 -> 64 the mean |difference| is about 1 grey
level.  ``draft=False`` gives exactly ``crop -> resize(LANCZOS)`` of the full
decode.  Manifest ``draft_mode`` records the setting, ``draft_decoded`` how many
images were actually decoded at reduced scale.

Per-file policy (a bad file never stops the run; it is converted or skipped
and listed in ``manifest["skipped"]`` with a one-line reason):

* ``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ... are converted to RGB.
* Transparency (``RGBA``, ``LA``, ``PA``, palette or grey with a tRNS chunk)
  is composited onto a white background.
* 16-bit grey (``I;16*``; ``I`` from older Pillow) is rescaled to 8 bit with
  ``round(v * 255 / 65535)`` - not clipped.
* EXIF orientation is applied.
* Skipped: zero-byte files, files that are not JPEG/PNG/WebP, truncated or
  corrupt data, images above ``max_pixels`` (decompression-bomb guard), images
  whose shorter side is below ``min_side``, files that vanish or cannot be
  read, zip members with unsafe names (absolute, drive letters, ``..``).

Zip archives are never extracted: every worker opens its own ``ZipFile`` and
reads members into memory; member names are only labels.

Writing is atomic: everything goes into a hidden temporary directory next to
``out`` that is renamed into place once complete (``overwrite=True`` replaces
the old dataset only after the new one is complete).
"""

from __future__ import annotations

import io
import math
import multiprocessing as mp
import os
import shutil
import struct
import sys
import time
import warnings
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from .dataset_format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_FILE,
    DatasetFormatError,
    content_hash,
    create_images,
    is_fakefacegen_dataset,
    keep_rows,
    load_images,
    load_manifest,
    publish,
    staging_dir,
    write_manifest,
)
from .dataset_format import one_line as _one_line

__all__ = [
    "DatasetFormatError",
    "PrepareError",
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "default_min_side",
    "load_images",
    "load_manifest",
    "prepare_dataset",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
# Pillow format names accepted when decoding (JPEG also yields "MPO" images).
_ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
DEFAULT_MAX_PIXELS = 100_000_000
# Files (or zip members) larger than this are skipped without being read.
MAX_FILE_BYTES = 512 * 1024 * 1024
ALLOWED_SIZES = (32, 64, 128, 256)
FILTER_NAME = "lanczos"
_RESAMPLE = Image.Resampling.LANCZOS
ALPHA_POLICY = "composite-white"


class PrepareError(ValueError):
    """Fatal problem with the input of :func:`prepare_dataset` (one-line message)."""


def default_min_side(size: int) -> int:
    """Default minimum shorter side: ``max(8, size // 4)`` (16 px for size 64).

    Anything smaller would be upscaled more than 4x and is skipped as "too small".
    """
    return max(8, size // 4)


# --------------------------------------------------------------------------
# source scanning
# --------------------------------------------------------------------------


def _is_candidate(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _is_hidden(parts: Iterable[str]) -> bool:
    return any((p.startswith(".") and p not in (".", "..")) or p == "__MACOSX" for p in parts)


def _unsafe_member(name: str) -> bool:
    n = name.replace("\\", "/")
    if n.startswith("/") or (len(n) >= 2 and n[1] == ":"):
        return True
    return any(p == ".." for p in n.split("/"))


def _scan_folder(root: Path) -> list[str]:
    found: list[str] = []
    seen_dirs: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
            key = (st.st_dev, st.st_ino)
        except OSError:
            dirnames[:] = []
            continue
        if key in seen_dirs:  # symlink loop
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden([d]))
        rel_dir = os.path.relpath(dirpath, root)
        for fn in filenames:
            if _is_hidden([fn]) or not _is_candidate(fn):
                continue
            rel = fn if rel_dir == "." else f"{rel_dir}/{fn}"
            found.append(rel.replace(os.sep, "/"))
    found.sort()
    return found


def _scan_zip(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as e:
        raise PrepareError(f"cannot read zip {path}: {_one_line(e)}") from None
    out = []
    for n in names:
        parts = [p for p in n.replace("\\", "/").split("/") if p]
        if not parts or _is_hidden(parts) or not _is_candidate(parts[-1]):
            continue
        out.append(n)
    out.sort()
    return out


def _resolve_source(src: str | os.PathLike) -> tuple[Path, str]:
    p = Path(src).expanduser()
    if not p.exists():
        raise PrepareError(f"source not found: {p}")
    p = p.resolve()
    if p.is_dir():
        return p, "folder"
    if p.is_file() and zipfile.is_zipfile(p):
        return p, "zip"
    raise PrepareError(f"source is neither a folder nor a .zip archive: {p}")


# --------------------------------------------------------------------------
# per-image work (runs in worker processes, or in-process for workers=1)
# --------------------------------------------------------------------------

_STATE: dict[str, Any] = {}


def _init_worker(cfg: dict) -> None:
    _STATE.clear()
    _STATE["cfg"] = cfg
    _STATE["zips"] = {}
    _STATE["out"] = np.load(cfg["images_path"], mmap_mode="r+")
    if cfg.get("in_subprocess"):
        # Our own process: let Pillow's hard error follow our limit (warning ignored
        # below; the explicit check in _load_image applies the limit itself).
        Image.MAX_IMAGE_PIXELS = cfg["max_pixels"]


def _close_worker() -> None:
    for zf in _STATE.get("zips", {}).values():
        try:
            zf.close()
        except Exception:
            pass
    out = _STATE.get("out")
    if out is not None:
        out.flush()
    _STATE.clear()


def _read_bytes(source: str, kind: str, name: str) -> bytes:
    """Return the raw bytes of one file/member (monkeypatched in tests)."""
    if kind == "zip":
        zf = _STATE["zips"].get(source)
        if zf is None:
            zf = _STATE["zips"][source] = zipfile.ZipFile(source)
        info = zf.getinfo(name)
        if info.file_size > MAX_FILE_BYTES:
            raise _Skip(f"file too large ({info.file_size} bytes)")
        return zf.read(info)
    path = os.path.join(source, name)
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        if st.st_size > MAX_FILE_BYTES:
            raise _Skip(f"file too large ({st.st_size} bytes)")
        return fh.read()


class _Skip(Exception):
    """Internal: skip the current file with this reason."""


_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _sixteen_to_8(arr: np.ndarray) -> np.ndarray:
    a = np.clip(arr.astype(np.int64), 0, 65535)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any decoded mode to RGB (alpha composited onto white)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode == "I":
        g = _sixteen_to_8(np.asarray(im))
        return Image.fromarray(g, "L").convert("RGB")
    if mode == "F":
        g = np.clip(np.rint(np.asarray(im, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(g, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return bg
    return im.convert("RGB")


def _decode_reason(e: BaseException) -> str:
    msg = str(e).lower()
    if isinstance(e, EOFError) or "truncated" in msg or "eof" in msg or "premature end" in msg:
        return "truncated"
    return f"corrupt image data: {type(e).__name__}: {_one_line(e, 120)}"


def _load_image(data: bytes, cfg: dict) -> tuple[np.ndarray, str | None, bool, bool]:
    """Decode, crop, resize.  Returns (pixels, from_mode or None, draft_used, transposed)."""
    size = cfg["size"]
    if not data:
        raise _Skip("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=_ACCEPTED_FORMATS)
        except Image.DecompressionBombError as e:
            raise _Skip(f"decompression bomb: {_one_line(e, 120)}") from None
        except Image.UnidentifiedImageError:
            raise _Skip("not a JPEG/PNG/WebP image (cannot identify)") from None
        except (OSError, EOFError, SyntaxError, ValueError, struct.error) as e:
            raise _Skip(_decode_reason(e)) from None
        w, h = im.size
        if w * h > cfg["max_pixels"]:
            raise _Skip(
                f"decompression bomb guard: {w}x{h} = {w * h} px > max_pixels {cfg['max_pixels']}"
            )
        side = min(w, h)
        if side < cfg["min_side"]:
            raise _Skip(f"too small ({w}x{h}, shorter side < min_side {cfg['min_side']})")
        left, top = (w - side) // 2, (h - side) // 2
        scale = 1
        if cfg["draft"] and im.format in ("JPEG", "MPO"):
            for a in (8, 4, 2):
                if side >= size * a:
                    res = im.draft(None, (w // a, h // a))
                    if res is not None:
                        box = res[1]
                        scale = w / box[2] if box[2] else 1
                    break
            if side < size * scale:  # Pillow chose a coarser scale than asked
                im = Image.open(io.BytesIO(data), formats=_ACCEPTED_FORMATS)
                scale = 1
        from_mode = None if im.mode == "RGB" else im.mode
        orientation = 1
        try:
            im.load()
        except Image.DecompressionBombError as e:
            raise _Skip(f"decompression bomb: {_one_line(e, 120)}") from None
        except (OSError, EOFError, SyntaxError, ValueError, struct.error) as e:
            raise _Skip(_decode_reason(e)) from None
        if "exif" in im.info:
            try:
                orientation = int(im.getexif().get(0x0112, 1))
            except Exception:  # broken EXIF: keep the pixels, ignore the orientation
                orientation = 1
        rgb = _to_rgb(im)
        # Crop first (so the filter sees no pixels outside the square, exactly like
        # crop-then-resize), then resize.  In a draft-decoded image the square's
        # edges may fall between pixels: crop the enclosing integer box and pass
        # the fractional remainder as the resize box.
        x0, y0 = left / scale, top / scale
        x1, y1 = (left + side) / scale, (top + side) / scale
        ix0, iy0 = int(x0), int(y0)
        ix1, iy1 = min(rgb.width, math.ceil(x1)), min(rgb.height, math.ceil(y1))
        crop = rgb.crop((ix0, iy0, ix1, iy1))
        box = (x0 - ix0, y0 - iy0, min(x1, ix1) - ix0, min(y1, iy1) - iy0)
        out = crop.resize((size, size), _RESAMPLE, box=box)
        transposed = False
        if orientation in _EXIF_TRANSPOSE:
            out = out.transpose(_EXIF_TRANSPOSE[orientation])
            transposed = True
    arr = np.asarray(out, dtype=np.uint8)
    if arr.shape != (size, size, 3):  # defensive; should never happen
        raise _Skip(f"unexpected decoded shape {arr.shape}")
    return arr, from_mode, scale > 1, transposed


def _process_one(index: int, src_i: int, name: str) -> tuple:
    cfg = _STATE["cfg"]
    source, kind = cfg["sources"][src_i]
    try:
        if kind == "zip" and _unsafe_member(name):
            raise _Skip("unsafe path (absolute or '..' in zip member name)")
        try:
            data = _read_bytes(source, kind, name)
        except FileNotFoundError:
            raise _Skip("vanished (file disappeared before it was read)") from None
        except KeyError:
            raise _Skip("vanished (zip member not found)") from None
        except PermissionError:
            raise _Skip("permission denied") from None
        except IsADirectoryError:
            raise _Skip("is a directory") from None
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise _Skip(f"corrupt zip member: {_one_line(e, 120)}") from None
        except RuntimeError as e:  # encrypted zip member
            raise _Skip(f"unreadable zip member: {_one_line(e, 120)}") from None
        except OSError as e:
            raise _Skip(f"read error: {_one_line(e, 120)}") from None
        arr, from_mode, drafted, transposed = _load_image(data, cfg)
    except _Skip as s:
        return (index, False, str(s), False, False)
    except MemoryError:
        return (index, False, "out of memory while decoding", False, False)
    except Exception as e:  # never let one file kill the run
        return (index, False, f"decode error: {type(e).__name__}: {_one_line(e, 120)}", False, False)
    _STATE["out"][index] = arr
    return (index, True, from_mode, drafted, transposed)


def _process_chunk(chunk: list[tuple[int, int, str]]) -> list[tuple]:
    return [_process_one(i, s, n) for i, s, n in chunk]


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------


def _validate_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or int(size) not in ALLOWED_SIZES:
        raise PrepareError(
            f"invalid size {size!r}: must be a power of two from 32 to 256 "
            f"({', '.join(map(str, ALLOWED_SIZES))})"
        )
    return int(size)


def _resolve_workers(workers: int | None) -> int:
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise PrepareError(f"invalid workers {workers!r}: must be a positive integer or None")
    return int(workers)


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def _check_no_overlap(sources: Sequence[Path]) -> None:
    """Refuse a source given twice or inside another: its images would be counted twice."""
    for i, a in enumerate(sources):
        for b in sources[i + 1:]:
            if a == b:
                raise PrepareError(f"source {a} is given twice; its images would be counted twice")
            for inner, outer in ((a, b), (b, a)):
                if outer.is_dir() and _is_within(inner, outer):
                    raise PrepareError(f"source {inner} is inside source {outer}; its images "
                                       f"would be counted twice (give only {outer})")


def _check_out(out: Path, overwrite: bool, sources: Sequence[Path]) -> None:
    for s in sources:
        if _is_within(s, out.resolve()):
            raise PrepareError(f"source {s} lies inside the output directory {out}")
    if not (out.exists() or out.is_symlink()):
        if out.parent.exists() and not out.parent.is_dir():
            raise PrepareError(f"parent of output is not a directory: {out.parent}")
        return
    if not overwrite:
        raise PrepareError(f"output already exists: {out} (pass overwrite=True / --overwrite to replace it)")
    if out.is_symlink() or not out.is_dir():
        raise PrepareError(f"refusing to overwrite {out}: not a directory")
    if any(out.iterdir()):
        if not is_fakefacegen_dataset(out):
            raise PrepareError(
                f"refusing to overwrite {out}: not empty and not a fakefacegen dataset (no valid {MANIFEST_FILE})"
            )


def _label(src_i: int, name: str, multi: bool) -> str:
    return f"{src_i}:{name}" if multi else name


def _mp_context():
    # "fork" (Linux): no re-import of __main__ (works from notebooks, stdin,
    # unguarded scripts) and the cheapest start.  Workers only touch Pillow,
    # numpy and files, never torch/OpenMP, so inheriting a threaded parent is
    # harmless.  Elsewhere fall back to spawn.
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def prepare_dataset(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    size: int = 64,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    min_side: int | None = None,
    progress: bool = True,
    draft: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    limit: int | None = None,
) -> dict:
    """Prepare ``source`` (folder, .zip, or a list of them) into dataset dir ``out``.

    Parameters
    ----------
    source: a folder (scanned recursively), a .zip archive, or a list/tuple of
        them (files concatenated in the order given; labels in the manifest are
        then prefixed ``"<source index>:"``).
    out: output dataset directory (must not exist unless ``overwrite``; with
        ``overwrite`` it must be empty or a previous fakefacegen dataset).
    size: output side, one of 32, 64, 128, 256.
    workers: processes to use; ``None`` = all cores available to this process;
        ``1`` runs in-process.
    min_side: skip images whose shorter side is below this (default
        :func:`default_min_side`: ``max(8, size // 4)``).
    progress: tqdm bar on stderr.
    draft: allow reduced-scale JPEG decoding (see module docs).
    max_pixels: decompression-bomb guard; larger images are skipped.
    limit: only consider the first ``limit`` candidate files (sorted order).

    Returns the manifest dict (also written to ``out/manifest.json``).
    Raises :class:`PrepareError` on fatal input problems.
    """
    t0 = time.perf_counter()
    size = _validate_size(size)
    n_workers = _resolve_workers(workers)
    if min_side is None:
        min_side = default_min_side(size)
    if isinstance(min_side, bool) or not isinstance(min_side, (int, np.integer)) or min_side < 1:
        raise PrepareError(f"invalid min_side {min_side!r}: must be a positive integer")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise PrepareError(f"invalid max_pixels {max_pixels!r}: must be a positive integer")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise PrepareError(f"invalid limit {limit!r}: must be a positive integer or None")

    multi = isinstance(source, (list, tuple))
    raw_sources = list(source) if multi else [source]
    if not raw_sources:
        raise PrepareError("no source given (empty list)")
    resolved = [_resolve_source(s) for s in raw_sources]
    _check_no_overlap([p for p, _ in resolved])
    out_path = Path(os.path.abspath(Path(out).expanduser()))
    _check_out(out_path, overwrite, [p for p, _ in resolved])

    # ---- scan
    items: list[tuple[int, str]] = []
    per_source_seen: list[int] = []
    for i, (p, kind) in enumerate(resolved):
        names = _scan_folder(p) if kind == "folder" else _scan_zip(p)
        if limit is not None:
            names = names[: max(0, limit - len(items))]
        per_source_seen.append(len(names))
        items.extend((i, n) for n in names)
    files_seen = len(items)
    if files_seen == 0:
        where = ", ".join(str(p) for p, _ in resolved)
        raise PrepareError(f"no image files ({'/'.join(IMAGE_EXTENSIONS)}) found in {where}")

    # ---- work
    tmp_dir = staging_dir(out_path)
    try:
        images_path = create_images(tmp_dir, files_seen, size)
        cfg = {
            "sources": [(str(p), kind) for p, kind in resolved],
            "images_path": str(images_path),
            "size": size,
            "min_side": int(min_side),
            "max_pixels": int(max_pixels),
            "draft": bool(draft),
        }
        tasks = [(idx, s, n) for idx, (s, n) in enumerate(items)]
        n_workers = min(n_workers, -(-files_seen // 4))  # at least ~4 files per process
        chunk = max(4, min(256, files_seen // (n_workers * 8)))
        chunks = [tasks[k : k + chunk] for k in range(0, files_seen, chunk)]

        results: list[tuple] = []
        from tqdm import tqdm

        bar = tqdm(total=files_seen, unit="img", desc="prepare", file=sys.stderr,
                   disable=not progress, dynamic_ncols=True)
        try:
            if n_workers == 1:
                saved_state = dict(_STATE)
                _init_worker(cfg)
                try:
                    for c in chunks:
                        results.extend(_process_chunk(c))
                        bar.update(len(c))
                finally:
                    _close_worker()
                    _STATE.update(saved_state)
            else:
                # ProcessPoolExecutor (not Pool): a worker that dies raises
                # BrokenProcessPool instead of hanging forever.
                with ProcessPoolExecutor(n_workers, mp_context=_mp_context(), initializer=_init_worker,
                                         initargs=({**cfg, "in_subprocess": True},)) as ex:
                    futures = [ex.submit(_process_chunk, c) for c in chunks]
                    try:
                        for fut in as_completed(futures):
                            res = fut.result()
                            results.extend(res)
                            bar.update(len(res))
                    except BaseException:
                        for f in futures:
                            f.cancel()
                        raise
        finally:
            bar.close()

        # ---- collect
        results.sort(key=lambda r: r[0])
        if len(results) != files_seen:  # defensive
            raise RuntimeError(f"internal error: {len(results)} results for {files_seen} files")
        ok = np.fromiter((r[1] for r in results), dtype=bool, count=files_seen)
        keep = np.flatnonzero(ok)
        skipped = [
            {"path": _label(items[r[0]][0], items[r[0]][1], multi), "reason": r[2]}
            for r in results if not r[1]
        ]
        count = int(keep.size)
        if count == 0:
            reasons: dict[str, int] = {}
            for s in skipped:
                key = s["reason"].split(":")[0].split(" (")[0]
                reasons[key] = reasons.get(key, 0) + 1
            summary = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
            where = ", ".join(str(p) for p, _ in resolved)
            raise PrepareError(
                f"no usable images in {where}: {files_seen} image file(s) seen, all skipped ({summary})"
            )
        converted: dict[str, int] = {}
        draft_decoded = transposed = 0
        per_source_count = [0] * len(resolved)
        for r in results:
            if r[1]:
                per_source_count[items[r[0]][0]] += 1
                if r[2] is not None:
                    converted[r[2]] = converted.get(r[2], 0) + 1
                draft_decoded += bool(r[3])
                transposed += bool(r[4])

        keep_rows(images_path, keep, size)
        final = np.load(images_path, mmap_mode="r")
        assert final.shape == (count, size, size, 3)
        digest = content_hash(final)
        del final

        elapsed = time.perf_counter() - t0
        from . import __version__

        src_entries = [
            {"path": str(p), "kind": kind, "files_seen": per_source_seen[i], "count": per_source_count[i]}
            for i, (p, kind) in enumerate(resolved)
        ]
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "source": [str(p) for p, _ in resolved] if multi else str(resolved[0][0]),
            "source_kind": [k for _, k in resolved] if multi else resolved[0][1],
            "sources": src_entries,
            "count": count,
            "size": size,
            "dtype": "uint8",
            "layout": "NHWC RGB",
            "crop": "center",
            "filter": FILTER_NAME,
            "resize_library": f"Pillow {Image.__version__}",
            "draft_mode": bool(draft),
            "draft_decoded": int(draft_decoded),
            "alpha": ALPHA_POLICY,
            "exif_transposed": int(transposed),
            "min_side": int(min_side),
            "max_pixels": int(max_pixels),
            "content_hash": digest,
            "files_seen": files_seen,
            "skipped": skipped,
            "converted": dict(sorted(converted.items())),
            "workers": n_workers,
            "elapsed_s": round(elapsed, 4),
            "images_per_s": round(count / elapsed, 2) if elapsed > 0 else None,
            "fakefacegen_version": __version__,
        }
        write_manifest(tmp_dir, manifest)

        # ---- publish atomically (re-checking the output: it may have appeared meanwhile)
        publish(tmp_dir, out_path, before_replace=lambda: _check_out(out_path, overwrite, [p for p, _ in resolved]))
        return manifest
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
