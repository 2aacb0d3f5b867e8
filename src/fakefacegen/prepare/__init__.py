"""Turn a folder or .zip of face photos into a ready-to-train dataset directory.

The output directory holds these files:

``images.npy``
    uint8 array of shape ``(N, size, size, 3)``, C order, RGB.  Open it with
    ``np.load(path, mmap_mode="r")`` (or :func:`load_images`).  Row order is the
    sorted relative path of each source file (sources of a list in the order
    given), independent of the number of workers.
``manifest.json``
    What was done (see :func:`prepare_dataset` and the README section).
``names.txt``
    The source file name of each row (one per line, row order; what attribute labels are matched
    by). Not written if a file name is not one UTF-8 line (a line break, or bytes that are not
    UTF-8; ``manifest["names_file"]`` is then null).

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
the old dataset only after the new one is complete). What a killed prepare left
next to ``out`` is removed by the next one (with a note). The output's size is
known before anything is decoded (``N x size x size x 3`` bytes plus 1 MiB): a
disk without that much free space is refused at once with a one-line error
naming ``out`` and the bytes needed and free, and the space is reserved before
the workers write into the memory-mapped array (a full disk there would be a
SIGBUS); a write that still fails with ENOSPC is the same one-line error.

Layout: this module validates the arguments and runs the steps of :func:`prepare_dataset`;
:mod:`.sources` finds the files, :mod:`.decode` turns one file into a training image,
:mod:`.workers` decodes in parallel straight into the staged ``images.npy``, and
:mod:`fakefacegen.dataset_format` owns the output format (staging, compaction, manifest, publish).
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..atomic import fsync_path
from ..cpus import available_cores
from ..dataset_format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    NAMES_FILE,
    DatasetFormatError,
    check_space,
    content_hash,
    create_images,
    dataset_bytes,
    keep_rows,
    load_images,
    load_manifest,
    no_space,
    publish,
    recover_interrupted,
    staging_dir,
    write_manifest,
    write_names,
)
from .errors import PrepareError
from .sources import IMAGE_EXTENSIONS, Source, SourceArg, check_out, resolve_sources, scan_sources
from .workers import run_workers

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

DEFAULT_MAX_PIXELS = 100_000_000
ALLOWED_SIZES = (32, 64, 128, 256)
FILTER_NAME = "lanczos"
_RESAMPLE = Image.Resampling.LANCZOS  # the filter FILTER_NAME names (benchmarks swap it for a ceiling)
ALPHA_POLICY = "composite-white"


def default_min_side(size: int) -> int:
    """Default minimum shorter side: ``max(8, size // 4)`` (16 px for size 64).

    Anything smaller would be upscaled more than 4x and is skipped as "too small".
    """
    return max(8, size // 4)


# --------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------


def _positive_int(name: str, value: Any, *, or_none: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise PrepareError(f"invalid {name} {value!r}: must be a positive integer{' or None' if or_none else ''}")
    return int(value)


def _validate_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or int(size) not in ALLOWED_SIZES:
        raise PrepareError(
            f"invalid size {size!r}: must be a power of two from 32 to 256 ({', '.join(map(str, ALLOWED_SIZES))})"
        )
    return int(size)


def _resolve_workers(workers: int | None) -> int:
    if workers is None:
        return available_cores()
    return _positive_int("workers", workers, or_none=True)


# --------------------------------------------------------------------------
# the steps after decoding
# --------------------------------------------------------------------------


@dataclass
class _Tally:
    """What the workers' results add up to."""

    keep: np.ndarray  # sorted row indices of the usable images
    skipped: list[dict[str, str]]
    converted: dict[str, int]
    draft_decoded: int
    transposed: int
    per_source_count: list[int]

    @property
    def count(self) -> int:
        return int(self.keep.size)


def _label(src_i: int, name: str, multi: bool) -> str:
    return f"{src_i}:{name}" if multi else name


def _tally(results: list[tuple], items: list[tuple[int, str]], resolved: Sequence[Source], multi: bool) -> _Tally:
    """Count the results (sorted by row); raises :class:`PrepareError` if every file was skipped."""
    files_seen = len(items)
    ok = np.fromiter((r[1] for r in results), dtype=bool, count=files_seen)
    keep = np.flatnonzero(ok)
    skipped = [{"path": _label(items[r[0]][0], items[r[0]][1], multi), "reason": r[2]} for r in results if not r[1]]
    if keep.size == 0:
        reasons: dict[str, int] = {}
        for s in skipped:
            key = s["reason"].split(":")[0].split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
        where = ", ".join(str(p) for p, _ in resolved)
        raise PrepareError(f"no usable images in {where}: {files_seen} image file(s) seen, all skipped ({summary})")
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
    return _Tally(keep, skipped, converted, draft_decoded, transposed, per_source_count)


def _hash_images(images_path: Path, count: int, size: int) -> str:
    final = np.load(images_path, mmap_mode="r")
    assert final.shape == (count, size, size, 3)
    return content_hash(final)


def _manifest(
    resolved: Sequence[Source],
    multi: bool,
    per_source_seen: list[int],
    tally: _Tally,
    cfg: dict,
    digest: str,
    n_workers: int,
    *,
    elapsed: float,
) -> dict:
    """The manifest of a prepared dataset: the format's fields, then what was done and found."""
    from .. import __version__

    files_seen = sum(per_source_seen)
    src_entries = [
        {"path": str(p), "kind": kind, "files_seen": per_source_seen[i], "count": tally.per_source_count[i]}
        for i, (p, kind) in enumerate(resolved)
    ]
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "source": [str(p) for p, _ in resolved] if multi else str(resolved[0][0]),
        "source_kind": [k for _, k in resolved] if multi else resolved[0][1],
        "sources": src_entries,
        "count": tally.count,
        "size": cfg["size"],
        "dtype": "uint8",
        "layout": "NHWC RGB",
        "crop": "center",
        "filter": FILTER_NAME,
        "resize_library": f"Pillow {Image.__version__}",
        "draft_mode": cfg["draft"],
        "draft_decoded": int(tally.draft_decoded),
        "alpha": ALPHA_POLICY,
        "exif_transposed": int(tally.transposed),
        "min_side": cfg["min_side"],
        "max_pixels": cfg["max_pixels"],
        "content_hash": digest,
        "files_seen": files_seen,
        "skipped": tally.skipped,
        "converted": dict(sorted(tally.converted.items())),
        "workers": n_workers,
        "elapsed_s": round(elapsed, 4),
        "images_per_s": round(tally.count / elapsed, 2) if elapsed > 0 else None,
        "fakefacegen_version": __version__,
    }


# --------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------


def prepare_dataset(
    source: SourceArg,
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
    min_side = _positive_int("min_side", default_min_side(size) if min_side is None else min_side)
    max_pixels = _positive_int("max_pixels", max_pixels)
    if limit is not None:
        limit = _positive_int("limit", limit, or_none=True)

    multi, resolved = resolve_sources(source)
    paths = [p for p, _ in resolved]
    out_path = Path(os.path.abspath(Path(out).expanduser()))
    recover_interrupted(out_path)  # first: a dataset a killed prepare had moved aside is put back
    check_out(out_path, overwrite, paths)
    items, per_source_seen = scan_sources(resolved, limit)

    staged = staging_dir(out_path)
    needed = dataset_bytes(len(items), size)
    try:
        check_space(staged, out_path, needed)
        images_path = create_images(staged, len(items), size)
        cfg = {
            "sources": [(str(p), kind) for p, kind in resolved],
            "images_path": str(images_path),
            "size": size,
            "min_side": min_side,
            "max_pixels": max_pixels,
            "draft": bool(draft),
            "resample": _RESAMPLE,
        }
        results, n_workers = run_workers(cfg, items, n_workers, progress)
        tally = _tally(results, items, resolved, multi)
        keep_rows(images_path, tally.keep, size)
        digest = _hash_images(images_path, tally.count, size)
        fsync_path(images_path)
        has_names = write_names(staged, [items[int(r)][1] for r in tally.keep])
        manifest = _manifest(
            resolved, multi, per_source_seen, tally, cfg, digest, n_workers, elapsed=time.perf_counter() - t0
        )
        manifest["names_file"] = NAMES_FILE if has_names else None
        write_manifest(staged, manifest)
        # atomically, re-checking the output (it may have appeared meanwhile)
        publish(staged, out_path, before_replace=lambda: check_out(out_path, overwrite, paths))
        return manifest
    except OSError as e:
        if e.errno == errno.ENOSPC:  # a full disk while writing: the same one line as the check above
            raise no_space(out_path, needed) from None
        raise
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
