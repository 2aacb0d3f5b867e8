"""Shared helpers for the benchmarks: machine header, interleaved timing with medians, matmul peak.

The benchmarks run on machines that may be shared with other work (on the development box a long
training job used the same two cores), so absolute seconds move with the load. Every benchmark
therefore times a baseline and its candidates in the same process, interleaved repeat by repeat
(A B C, C B A, A B C, ...), and reports the ratio of medians: both sides see the same load.
"""

from __future__ import annotations

import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))  # synthetic_faces: the datasets the tests use

import torch  # noqa: E402

from fakefacegen.runtime import available_cores, choose_fast_path, cpu_capability, cpu_has_native_bf16, cpu_name  # noqa: E402
from synthetic_faces import make_dataset_dir  # noqa: E402

CELEBA64_DIRS = (Path("/work/data/celeba64"), Path("/work/runs/data/celeba64"))
"""Where the prepared 64 px CelebA lives on the development machines (the first that exists is used)."""
LOAD_WARNING = 0.75
"""Warn when the 1-minute load average is above this share of the usable cores."""


def median(xs: list[float]) -> float:
    """Median of a non-empty list."""
    return float(statistics.median(xs))


def header(title: str) -> None:
    """Print what the figures depend on: CPU model, ATen capability, threads, the chosen fast path, load."""
    fast = choose_fast_path(torch.device("cpu"))  # sets torch's thread count to the usable cores, as train does
    print(f"== {title} ==")
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}   torch {torch.__version__}")
    print(f"cpu: {cpu_name()}   capability: {cpu_capability()}   native bf16: {cpu_has_native_bf16()}")
    print(f"threads: torch {torch.get_num_threads()}, usable cores {available_cores()}, os.cpu_count {os.cpu_count()}")
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ}
    if env:
        print(f"environment: {env}")
    print(f"chosen path (runtime.choose_fast_path): {fast.describe()}")
    try:
        la = os.getloadavg()
        print(f"load average: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} (above the core count = other jobs share the CPU)")
    except OSError:
        pass
    load_report("at start", available_cores(), quiet=True)
    sys.stdout.flush()


def load_report(when: str, cores: int, *, quiet: bool = False) -> float:
    """The 1-minute load average (NaN where there is none), with a WARNING line when it says that other jobs
    share the cores: then absolute times are slowed by them, and only ratios of interleaved repeats mean much."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return float("nan")
    if load > LOAD_WARNING * cores:
        print(
            f"WARNING: load average {load:.2f} {when} on {cores} usable cores: other jobs share the CPU; absolute "
            "img/s are slowed by them and vary; read the ratios of interleaved repeats and their spread"
        )
    elif not quiet:
        print(f"load average {load:.2f} {when} on {cores} usable cores")
    return load


def interleaved(
    cases: dict[str, Callable[[], float | None]], repeats: int, *, verbose: bool = True, unit: str = "s"
) -> dict[str, list[float]]:
    """Run every case once per repeat, alternating the order (ABC, CBA, ...); returns seconds per case.

    A case returns its own measured seconds (to leave set-up out) or None to be timed whole.
    """
    names = list(cases)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            got = cases[name]()
            s = got if got is not None else time.perf_counter() - t0
            out[name].append(s)
            if verbose and not name.startswith("("):  # "(...)" cases are probes, not results
                print(f"  repeat {r + 1}/{repeats} {name:<28s} {s:9.4f} {unit}", flush=True)
    return out


def matmul_gflops(dtype: torch.dtype, n: int = 1024, reps: int = 5, device: str = "cpu") -> float:
    """Measured square-matmul GFLOP/s for ``dtype`` on the current threads / GPU (best of ``reps``)."""
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    a @ b  # warm-up (oneDNN/BLAS/cuBLAS picks its kernel)
    sync()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def matmul_peaks(repeats: int = 3, n: int = 1024, device: str = "cpu") -> dict[str, float]:
    """fp32 (n^3) and bf16 matmul GFLOP/s, interleaved, median over ``repeats`` (each the best of a few).

    Without native bf16 the bf16 matmul is emulated and tens of times slower, so it is measured
    at n/2 there (the rate, not the size, is what is reported); keys 'n_fp32' and 'n_bf16' say which.
    """
    nb = n if (device != "cpu" or cpu_has_native_bf16()) else n // 2
    res: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(repeats):
        for name in ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32"):
            if name == "fp32":
                res[name].append(matmul_gflops(torch.float32, n, device=device))
            else:
                res[name].append(matmul_gflops(torch.bfloat16, nb, reps=3, device=device))
    return {**{k: median(v) for k, v in res.items()}, "n_fp32": n, "n_bf16": nb}


def dataset_for(resolution: int, tmp: Path, n: int = 512) -> tuple[Path, str]:
    """The prepared CelebA (CELEBA64_DIRS) at 64 px when present, else ``n`` synthetic images in ``tmp``."""
    for d in CELEBA64_DIRS:
        if resolution == 64 and (d / "images.npy").is_file():
            return d, f"{d} (prepared CelebA)"
    return make_dataset_dir(tmp / f"synthetic{resolution}", n, resolution), f"synthetic {n} images"


def fmt_ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x"


def quiet_trainer(cfg, outdir: Path, name: str, *, device: str = "cpu", context=None):
    """A ``Trainer`` for timing steps: built without its start-up chatter, with the bookkeeping around
    steps (grids, checkpoints) switched off. ``context`` wraps the construction (e.g. a patched optimiser)."""
    import contextlib
    import io

    from fakefacegen.train import Trainer

    with context or contextlib.nullcontext(), contextlib.redirect_stderr(io.StringIO()):
        tr = Trainer(cfg, outdir=outdir, name=name, device=device, progress=False)
    tr._write_grids = lambda real=False: None
    tr._checkpoint = lambda final: None
    return tr


def trainer_seconds_per_step(tr, steps: int) -> float:
    """Seconds per step of ``steps`` real Trainer steps (its own data, flips, noise, D and G updates)."""
    import contextlib
    import io

    torch.set_num_threads(tr.fast.threads)  # each Trainer set the global count when built; restore its own
    tr.stop_after = steps
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        tr._loop()
    sync(tr.device)
    return (time.perf_counter() - t0) / steps


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def count_flops(fn: Callable[[], object]) -> int:
    """Matrix-product and convolution FLOPs of ``fn()`` (forward and backward), by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())
