"""Where images come from and go to: resolving and scanning the sources (folders, zip archives), and
checking that the sources and the output directory do not overlap.

Hidden files and folders (and ``__MACOSX``) are ignored; a folder is walked recursively, following
links but not their loops; names are sorted, so the row order of the dataset is fixed.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..dataset_format import MANIFEST_FILE, is_fakefacegen_dataset, one_line
from .errors import PrepareError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")

Source = tuple[Path, str]  # (resolved path, "folder" | "zip")
# What prepare accepts as its source: one folder or .zip, or a list/tuple of them.
SourceArg = str | os.PathLike | list[str | os.PathLike] | tuple[str | os.PathLike, ...]


def _is_candidate(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _is_hidden(parts: Iterable[str]) -> bool:
    return any((p.startswith(".") and p not in (".", "..")) or p == "__MACOSX" for p in parts)


def unsafe_member(name: str) -> bool:
    """Whether a zip member name is absolute, has a drive letter, or climbs out with ``..``."""
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
        raise PrepareError(f"cannot read zip {path}: {one_line(e)}") from None
    out = []
    for n in names:
        parts = [p for p in n.replace("\\", "/").split("/") if p]
        if not parts or _is_hidden(parts) or not _is_candidate(parts[-1]):
            continue
        out.append(n)
    out.sort()
    return out


def _resolve_source(src: str | os.PathLike) -> Source:
    p = Path(src).expanduser()
    if not p.exists():
        raise PrepareError(f"source not found: {p}")
    p = p.resolve()
    if p.is_dir():
        return p, "folder"
    if p.is_file() and zipfile.is_zipfile(p):
        return p, "zip"
    raise PrepareError(f"source is neither a folder nor a .zip archive: {p}")


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def _check_no_overlap(sources: Sequence[Path]) -> None:
    """Refuse a source given twice or inside another: its images would be counted twice."""
    for i, a in enumerate(sources):
        for b in sources[i + 1 :]:
            if a == b:
                raise PrepareError(f"source {a} is given twice; its images would be counted twice")
            for inner, outer in ((a, b), (b, a)):
                if outer.is_dir() and _is_within(inner, outer):
                    raise PrepareError(
                        f"source {inner} is inside source {outer}; its images "
                        f"would be counted twice (give only {outer})"
                    )


def check_out(out: Path, overwrite: bool, sources: Sequence[Path]) -> None:
    """Refuse an output that holds a source, or that exists (unless ``overwrite`` and it is empty or a dataset)."""
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


def resolve_sources(source: SourceArg) -> tuple[bool, list[Source]]:
    """(whether a list was given, the resolved sources); refuses a missing, unknown or doubly given source."""
    if isinstance(source, (list, tuple)):
        multi, raw_sources = True, list(source)
    else:
        multi, raw_sources = False, [source]
    if not raw_sources:
        raise PrepareError("no source given (empty list)")
    resolved = [_resolve_source(s) for s in raw_sources]
    _check_no_overlap([p for p, _ in resolved])
    return multi, resolved


def scan_sources(resolved: Sequence[Source], limit: int | None) -> tuple[list[tuple[int, str]], list[int]]:
    """Every candidate image as (source index, name) in dataset order, and how many each source gave.

    ``limit`` keeps only the first ``limit`` candidates. Raises :class:`PrepareError` if there are none.
    """
    items: list[tuple[int, str]] = []
    per_source_seen: list[int] = []
    for i, (p, kind) in enumerate(resolved):
        names = _scan_folder(p) if kind == "folder" else _scan_zip(p)
        if limit is not None:
            names = names[: max(0, limit - len(items))]
        per_source_seen.append(len(names))
        items.extend((i, n) for n in names)
    if not items:
        where = ", ".join(str(p) for p, _ in resolved)
        raise PrepareError(f"no image files ({'/'.join(IMAGE_EXTENSIONS)}) found in {where}")
    return items, per_source_seen
