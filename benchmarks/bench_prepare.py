"""Benchmark `fakefacegen.prepare` against a naive single-core Pillow loop.

    python benchmarks/bench_prepare.py [--limit N] [--size 64] [--repeats 1]

(a) naive: for each file Image.open -> convert("RGB") -> centre square crop ->
    resize(size, LANCZOS), one core, no draft mode (the cheaper order, our main baseline).
(a') the issue's literal order, as in the DCGAN tutorial's Resize(size) + CenterCrop(size):
    open -> convert -> resize (shorter side to size, LANCZOS) -> centre crop.
(b) prepare_dataset(..., workers=all cores)   (draft mode on, the default)
(c) prepare_dataset(..., draft=False)         (shows where the speed comes from)
plus prepare on the half-resolution CelebA folder and on both folders at once.
--stages adds the one-core cost of each step per image (best of 3 passes over the first 500 files,
bytes already in memory), which bounds what any parallel prepare can reach on this many cores.
--ceiling adds (d): prepare with its LANCZOS resize swapped for NEAREST (a few us per image). That is
not a mode anyone should use; it is the ceiling that no faster implementation of the resize can pass.

Needs ../shared/data/celeba/img_align_celeba relative to the repo root (skipped
with a message if absent).  Prints images/s, ratio, and the pixel agreement of
prepare's output with the naive loop (mean |diff| in 0..255 levels).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import fakefacegen.prepare as prepare_module  # noqa: E402
from fakefacegen.prepare import IMAGE_EXTENSIONS, prepare_dataset  # noqa: E402

CELEBA = REPO.parent / "shared" / "data" / "celeba" / "img_align_celeba"
CELEBA_HALF = REPO.parent / "shared" / "data" / "celeba_half" / "img_align_celeba_half"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_capability() -> str:
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except Exception as e:  # torch optional here
        return f"n/a ({type(e).__name__})"


def list_files(folder: Path, limit: int | None) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    return files[:limit] if limit else files


def naive(files: list[Path], size: int) -> np.ndarray:
    out = np.empty((len(files), size, size, 3), np.uint8)
    for i, f in enumerate(files):
        im = Image.open(f).convert("RGB")
        w, h = im.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        out[i] = np.asarray(im.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.LANCZOS))
    return out


def naive_resize_first(files: list[Path], size: int) -> np.ndarray:
    out = np.empty((len(files), size, size, 3), np.uint8)
    for i, f in enumerate(files):
        im = Image.open(f).convert("RGB")
        w, h = im.size
        s = size / min(w, h)
        rw, rh = max(size, round(w * s)), max(size, round(h * s))
        im = im.resize((rw, rh), Image.Resampling.LANCZOS)
        left, top = (rw - size) // 2, (rh - size) // 2
        out[i] = np.asarray(im.crop((left, top, left + size, top + size)))
    return out


def stage_costs(files: list[Path], size: int) -> dict[str, float]:
    """Microseconds per image for each step of the draft pipeline and for the naive loop, one core."""
    import io

    datas = [f.read_bytes() for f in files[:500]]
    w, h = Image.open(io.BytesIO(datas[0])).size
    side = min(w, h)
    a = next((a for a in (8, 4, 2) if side >= size * a), 1)
    dw, dh, ds = w // a, h // a, side // a
    box = ((dw - ds) // 2, (dh - ds) // 2, (dw - ds) // 2 + ds, (dh - ds) // 2 + ds)

    def draft(d):
        im = Image.open(io.BytesIO(d))
        im.draft(None, (dw, dh))  # as prepare does
        im.load()
        return im

    def naive_one(d):
        im = Image.open(io.BytesIO(d)).convert("RGB")
        left, top = (w - side) // 2, (h - side) // 2
        return np.asarray(im.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS))

    decoded = [draft(d) for d in datas]
    steps = {
        "open (parse headers)": lambda: [Image.open(io.BytesIO(d)) for d in datas],
        "full decode": lambda: [Image.open(io.BytesIO(d)).load() for d in datas],
        f"draft decode (1/{a})": lambda: [draft(d) for d in datas],
        "crop + LANCZOS resize of the draft": lambda: [
            im.crop(box).resize((size, size), Image.Resampling.LANCZOS) for im in decoded
        ],
        "naive (open, convert, crop, resize)": lambda: [naive_one(d) for d in datas],
    }
    out = {}
    for name, fn in steps.items():
        best = min(timeit_once(fn) for _ in range(3))
        out[name] = best / len(datas) * 1e6
    return out


def timeit_once(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _cpu_s() -> float:
    """CPU seconds used so far by this process and its reaped children (workers)."""
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def timed(fn, repeats: int):
    """Median wall seconds, median CPU seconds (incl. worker processes), last result."""
    times, cpus, result = [], [], None
    for _ in range(repeats):
        c = _cpu_s()
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
        cpus.append(_cpu_s() - c)
    return statistics.median(times), statistics.median(cpus), result


@contextlib.contextmanager
def resize_swapped(resample):
    """Within the block, prepare resizes with ``resample`` (its forked workers inherit the swap)."""
    saved, prepare_module._RESAMPLE = prepare_module._RESAMPLE, resample
    try:
        yield
    finally:
        prepare_module._RESAMPLE = saved


def run_prepare(source, size, limit, tmp, tag, **kw):
    out = Path(tmp) / f"{tag}-{time.monotonic_ns()}"
    m = prepare_dataset(source, out, size, progress=False, limit=limit, **kw)
    arr = np.load(out / "images.npy")
    return m, arr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="use only the first N files (default: all)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1, help="repeats per measurement (median reported)")
    ap.add_argument("--workers", type=int, default=None, help="prepare workers (default: all cores)")
    ap.add_argument("--stages", action="store_true", help="also time each step per image on one core")
    ap.add_argument(
        "--ceiling",
        action="store_true",
        help="also run prepare with the resize swapped for NEAREST: the bound for a faster resize",
    )
    args = ap.parse_args(argv)

    if not CELEBA.is_dir():
        print(f"SKIP: real data not found at {CELEBA}")
        return 0
    try:
        n_cores = len(os.sched_getaffinity(0))
    except AttributeError:
        n_cores = os.cpu_count() or 1
    workers = args.workers or n_cores
    files = list_files(CELEBA, args.limit)
    n = len(files)
    w0, h0 = Image.open(files[0]).size
    print(f"CPU: {cpu_model()}  ({n_cores} usable cores, os.cpu_count={os.cpu_count()})")
    print(f"torch cpu capability: {cpu_capability()}")
    print(f"Python {platform.python_version()}, Pillow {Image.__version__}, numpy {np.__version__}")
    print(f"data: {CELEBA}  ({n} files, first {w0}x{h0}), size {args.size}, repeats {args.repeats}")
    try:
        print(f"load average: {os.getloadavg()[0]:.2f} (other jobs share these cores)")
    except OSError:
        pass

    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        t_naive, c_naive, ref = timed(lambda: naive(files, args.size), args.repeats)
        t_rf, c_rf, _ = timed(lambda: naive_resize_first(files, args.size), args.repeats)
        t_prep, c_prep, (m, arr) = timed(
            lambda: run_prepare(CELEBA, args.size, args.limit, tmp, "p", workers=workers), args.repeats
        )
        t_nod, c_nod, (m2, arr2) = timed(
            lambda: run_prepare(CELEBA, args.size, args.limit, tmp, "nd", workers=workers, draft=False), args.repeats
        )
        assert arr.shape == ref.shape, (arr.shape, ref.shape)
        diff = np.abs(arr.astype(np.int16) - ref.astype(np.int16))
        mad, p99 = diff.mean(), np.percentile(diff, 99)
        mad2 = np.abs(arr2.astype(np.int16) - ref.astype(np.int16)).mean()
        r_naive, r_prep, r_nod = n / t_naive, n / t_prep, n / t_nod
        print()
        print("                               wall img/s        img per CPU-second")
        print(f"(a) naive 1-core loop        : {r_naive:8.1f} ({t_naive:6.2f} s)  {n / c_naive:8.1f}")
        print(f"(a') naive, resize then crop : {n / t_rf:8.1f} ({t_rf:6.2f} s)  {n / c_rf:8.1f}")
        print(
            f"(b) prepare workers={m['workers']} draft : {r_prep:8.1f} ({t_prep:6.2f} s)  {n / c_prep:8.1f}"
            f"   draft-decoded {m['draft_decoded']}/{m['count']}"
        )
        print(
            f"(c) prepare workers={m2['workers']} exact : {r_nod:8.1f} ({t_nod:6.2f} s)  {n / c_nod:8.1f}   draft=False"
        )
        print(f"ratio prepare/naive, wall    : {r_prep / r_naive:.2f}x   (exact mode: {r_nod / r_naive:.2f}x)")
        print(f"ratio vs (a') resize->crop   : {t_rf / t_prep:.2f}x wall, {c_rf / c_prep:.2f}x per CPU-second")
        print(f"ratio per CPU-second         : {c_naive / c_prep:.2f}x   (exact mode: {c_naive / c_nod:.2f}x)")
        print(
            f"  -> on {m['workers']} otherwise idle cores expect about "
            f"{m['workers'] * c_naive / c_prep:.1f}x wall (CPU ratio x workers, an upper bound)"
        )
        print(
            f"pixel agreement vs naive     : draft mean|diff| {mad:.3f} levels (p99 {p99:.0f}); "
            f"exact mean|diff| {mad2:.3f}"
        )
        if args.ceiling:
            import multiprocessing as mp

            if workers > 1 and "fork" not in mp.get_all_start_methods():
                print("(d) resize ceiling: SKIP (needs fork-started workers to carry the swapped filter)")
            else:
                with resize_swapped(Image.Resampling.NEAREST):
                    t_ceil, c_ceil, _ = timed(
                        lambda: run_prepare(CELEBA, args.size, args.limit, tmp, "c", workers=workers), args.repeats
                    )
                print(
                    f"(d) prepare, resize -> NEAREST: {n / t_ceil:8.1f} ({t_ceil:6.2f} s)  {n / c_ceil:8.1f}"
                    f"   ceiling for any faster LANCZOS: {t_naive / t_ceil:.2f}x wall "
                    f"(the resize is {100 * (1 - t_ceil / t_prep):.0f}% of prepare's wall time)"
                )
        if args.stages:
            costs = stage_costs(files, args.size)
            print()
            print("one core, microseconds per image (best of 3 over 500 files in memory):")
            for name, us in costs.items():
                print(f"  {name:38s} {us:8.1f}")
            keys = list(costs)
            floor = costs[keys[2]] + costs[keys[3]]
            print(
                f"  -> draft pipeline floor {floor:.0f} us vs naive {costs[keys[4]]:.0f} us: "
                f"{costs[keys[4]] / floor:.2f}x per core, at most {workers * costs[keys[4]] / floor:.1f}x "
                f"on {workers} perfectly parallel workers"
            )
        print()
        for label, src in (
            ("celeba (178x218)", CELEBA),
            ("celeba_half (89x109)", CELEBA_HALF),
            ("both folders, one dataset", [CELEBA, CELEBA_HALF]),
        ):
            srcs = src if isinstance(src, list) else [src]
            if not all(Path(s).is_dir() for s in srcs):
                print(f"prepare {label}: SKIP (missing {[str(s) for s in srcs if not Path(s).is_dir()]})")
                continue
            t, _, (mm, a) = timed(lambda: run_prepare(src, args.size, args.limit, tmp, "x", workers=workers), 1)
            print(
                f"prepare {label:26s}: {mm['count']:6d} images, {mm['count'] / t:8.1f} img/s "
                f"({t:.2f} s), skipped {len(mm['skipped'])}, draft-decoded {mm['draft_decoded']}, "
                f"shape {a.shape}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
