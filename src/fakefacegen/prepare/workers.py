"""The parallel writer: worker processes decode their share of the files straight into ``images.npy``.

Each worker memory-maps the staged ``images.npy`` and writes row ``index`` for task ``index``;
what it returns per file is ``(index, ok, reason or converted-from mode, draft_used, transposed)``.
Zip archives are never extracted: every worker opens its own ``ZipFile`` and reads members into
memory. With one worker everything runs in-process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np
from PIL import Image

from ..dataset_format import one_line
from .decode import decode_image
from .errors import Skip
from .sources import unsafe_member

# Files (or zip members) larger than this are skipped without being read.
MAX_FILE_BYTES = 512 * 1024 * 1024

Task = tuple[int, int, str]  # (row index, source index, file name or zip member)


_STATE: dict[str, Any] = {}


def init_worker(cfg: dict) -> None:
    """Set up this process (or the caller, with one worker) to decode into ``cfg["images_path"]``."""
    _STATE.clear()
    _STATE["cfg"] = cfg
    _STATE["zips"] = {}
    _STATE["out"] = np.load(cfg["images_path"], mmap_mode="r+")
    if cfg.get("in_subprocess"):
        # Our own process: let Pillow's hard error follow our limit (warning ignored
        # below; the explicit check in decode_image applies the limit itself).
        Image.MAX_IMAGE_PIXELS = cfg["max_pixels"]


def close_worker() -> None:
    """Close this process's zip archives and flush its view of ``images.npy``."""
    for zf in _STATE.get("zips", {}).values():
        try:
            zf.close()
        except Exception:
            pass
    out = _STATE.get("out")
    if out is not None:
        out.flush()
    _STATE.clear()


def read_bytes(source: str, kind: str, name: str) -> bytes:
    """Return the raw bytes of one file/member (monkeypatched in tests)."""
    if kind == "zip":
        zf = _STATE["zips"].get(source)
        if zf is None:
            zf = _STATE["zips"][source] = zipfile.ZipFile(source)
        info = zf.getinfo(name)
        if info.file_size > MAX_FILE_BYTES:
            raise Skip(f"file too large ({info.file_size} bytes)")
        return zf.read(info)
    path = os.path.join(source, name)
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        if st.st_size > MAX_FILE_BYTES:
            raise Skip(f"file too large ({st.st_size} bytes)")
        return fh.read()


def process_one(index: int, src_i: int, name: str) -> tuple:
    """Decode file ``name`` of source ``src_i`` into row ``index``; never raises for a bad file."""
    cfg = _STATE["cfg"]
    source, kind = cfg["sources"][src_i]
    try:
        if kind == "zip" and unsafe_member(name):
            raise Skip("unsafe path (absolute or '..' in zip member name)")
        try:
            data = read_bytes(source, kind, name)
        except FileNotFoundError:
            raise Skip("vanished (file disappeared before it was read)") from None
        except KeyError:
            raise Skip("vanished (zip member not found)") from None
        except PermissionError:
            raise Skip("permission denied") from None
        except IsADirectoryError:
            raise Skip("is a directory") from None
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise Skip(f"corrupt zip member: {one_line(e, 120)}") from None
        except RuntimeError as e:  # encrypted zip member
            raise Skip(f"unreadable zip member: {one_line(e, 120)}") from None
        except OSError as e:
            raise Skip(f"read error: {one_line(e, 120)}") from None
        arr, from_mode, drafted, transposed = decode_image(data, cfg)
    except Skip as s:
        return (index, False, str(s), False, False)
    except MemoryError:
        return (index, False, "out of memory while decoding", False, False)
    except Exception as e:  # never let one file kill the run
        return (index, False, f"decode error: {type(e).__name__}: {one_line(e, 120)}", False, False)
    _STATE["out"][index] = arr
    return (index, True, from_mode, drafted, transposed)


def process_chunk(chunk: list[Task]) -> list[tuple]:
    return [process_one(i, s, n) for i, s, n in chunk]


def mp_context() -> Any:
    # "fork" (Linux): no re-import of __main__ (works from notebooks, stdin,
    # unguarded scripts) and the cheapest start.  Workers only touch Pillow,
    # numpy and files, never torch/OpenMP, so inheriting a threaded parent is
    # harmless.  Elsewhere fall back to spawn.
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def run_workers(cfg: dict, items: list[tuple[int, str]], workers: int, progress: bool) -> tuple[list[tuple], int]:
    """Decode every ``(source index, name)`` of ``items`` into its row; returns (results sorted by row, workers used).

    Uses at most ``workers`` processes, and no more than one per ~4 files.
    """
    files_seen = len(items)
    tasks = [(idx, s, n) for idx, (s, n) in enumerate(items)]
    n_workers = min(workers, -(-files_seen // 4))  # at least ~4 files per process
    chunk = max(4, min(256, files_seen // (n_workers * 8)))
    chunks = [tasks[k : k + chunk] for k in range(0, files_seen, chunk)]

    results: list[tuple] = []
    from tqdm import tqdm

    bar = tqdm(total=files_seen, unit="img", desc="prepare", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    try:
        if n_workers == 1:
            saved_state = dict(_STATE)
            init_worker(cfg)
            try:
                for c in chunks:
                    results.extend(process_chunk(c))
                    bar.update(len(c))
            finally:
                close_worker()
                _STATE.update(saved_state)
        else:
            # ProcessPoolExecutor (not Pool): a worker that dies raises
            # BrokenProcessPool instead of hanging forever.
            with ProcessPoolExecutor(
                n_workers, mp_context=mp_context(), initializer=init_worker, initargs=({**cfg, "in_subprocess": True},)
            ) as ex:
                futures = [ex.submit(process_chunk, c) for c in chunks]
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
    results.sort(key=lambda r: r[0])
    if len(results) != files_seen:  # defensive
        raise RuntimeError(f"internal error: {len(results)} results for {files_seen} files")
    return results, n_workers
