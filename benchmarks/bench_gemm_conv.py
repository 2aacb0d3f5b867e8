"""Per layer: the matrix-multiply route of `gemm_conv.py` vs torch's own convolution kernels.

    python benchmarks/bench_gemm_conv.py [--batch 128] [--repeats 6]

Forward + backward (input and weight gradients) of one DCGAN layer under CPU bf16 autocast, channels_last,
at batch 128: the same `fakefacegen.gemm_conv` layer with its route off (torch's kernel, the baseline) and
on, interleaved repeat by repeat; medians and the ratio baseline / route. Covers the reference (kernel 5)
and tutorial (kernel 4) layouts on 4x4, 8x8 and 16x16 maps and the 1x1 ends. These are the figures behind
`gemm_conv.MIN_PIXELS` / `MAX_PIXELS` (the route is taken where it wins). Meaningful on a CPU with native
bf16 (AVX512-BF16 / AMX); elsewhere training does not use bf16 at all.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from common import header, interleaved, median  # noqa: E402

from fakefacegen.gemm_conv import MAX_PIXELS, MIN_PIXELS, Conv2d, ConvTranspose2d, set_gemm_route  # noqa: E402

# (kind, c_in, c_out, input side, kernel, stride, padding, output_padding)
LAYERS = [
    *[
        (kind, cin, cout, side, k, 2, p, op)
        for k, p, op in ((5, 2, 1), (4, 1, 0))
        for kind, cin, cout, side in (
            ("conv", 64, 128, 32),
            ("conv", 128, 256, 16),
            ("conv", 256, 512, 8),
            ("convT", 512, 256, 4),
            ("convT", 256, 128, 8),
            ("convT", 128, 64, 16),
        )
    ],
    ("conv", 512, 1, 4, 4, 1, 0, 0),  # D's last layer, 4x4 -> 1x1
    ("convT", 100, 512, 1, 4, 1, 0, 0),  # G's first layer, 1x1 -> 4x4
]


def layer_case(layer, batch: int, route: bool):
    kind, cin, cout, side, k, s, p, op = layer
    torch.manual_seed(0)
    m = (
        Conv2d(cin, cout, k, s, p, bias=False)
        if kind == "conv"
        else ConvTranspose2d(cin, cout, k, s, p, output_padding=op, bias=False)
    )
    m = m.to(memory_format=torch.channels_last)
    set_gemm_route(m, 1 << 20 if route else 0)
    x = torch.randn(batch, cin, side, side).to(memory_format=torch.channels_last).requires_grad_(True)

    def run() -> float:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x)
        y.float().sum().backward()
        return time.perf_counter() - t

    run()  # warm-up (oneDNN primitive creation)
    return run


def small_pixels(layer) -> int:
    kind, _, _, side, k, s, p, _ = layer
    if kind == "convT":
        return side * side
    out = (side + 2 * p - k) // s + 1
    return out * out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=6)
    args = ap.parse_args(argv)
    header("bench_gemm_conv: one layer's forward+backward, torch kernel vs the matrix-multiply route")
    print(
        f"batch {args.batch}, bf16 autocast, channels_last; route window in training: "
        f"{MIN_PIXELS}..{MAX_PIXELS} pixels on the small side\n"
    )
    print(f"{'layer':34s} {'small side':>10s} {'torch ms':>9s} {'route ms':>9s} {'ratio':>7s}  training takes")
    for layer in LAYERS:
        kind, cin, cout, side, k, s, p, _ = layer
        times = interleaved(
            {"torch": layer_case(layer, args.batch, False), "route": layer_case(layer, args.batch, True)},
            args.repeats,
            verbose=False,
        )
        t_torch, t_route = median(times["torch"]), median(times["route"])
        px = small_pixels(layer)
        taken = "route" if MIN_PIXELS <= px <= MAX_PIXELS else "torch"
        name = f"{kind} {cin}->{cout} on {side}x{side}, k{k} s{s} p{p}"
        print(f"{name:34s} {px:7d} px {t_torch * 1e3:9.1f} {t_route * 1e3:9.1f} {t_torch / t_route:6.2f}x  {taken}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
