"""How far one training step's gradients land from float64 on each CPU path: fp32, bf16 autocast
(oneDNN's kernels), bf16 autocast + the GEMM route for small maps (gemm_conv.py).

    python benchmarks/bench_fidelity.py                      # 64 px, batch 64, ~1 min on 2 cores
    python benchmarks/bench_fidelity.py --arch reference --batch 128 --batches 5

Not a speed benchmark: it separates the two sources of the bf16 path's numerical error. G and D
(DCGAN init, seed 0, the bundled model's kernel-4 layout by default) first take --warm-steps fp32
Adam steps on real faces, so the gradients are those of a running GAN rather than of the init. Then,
for --batches batches of real faces and noise, every path computes D's gradient (BCE on real and
fake) and G's gradient (non-saturating BCE through D) on the same weights and inputs; the table gives
the median over batches of ||grad - grad_fp64|| / ||grad_fp64|| per network, and the cosine between
the path's and fp64's gradient. The baseline is the same computation in float64 without autocast; the
last row, fp64 on another batch of faces and noise with the same weights, is the scale of the
minibatch noise that every SGD/Adam step carries anyway.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
from pathlib import Path

import torch  # noqa: E402
from common import dataset_for, header

from fakefacegen.config import ModelConfig  # noqa: E402
from fakefacegen.data import FaceDataset, to_model_input  # noqa: E402
from fakefacegen.gemm_conv import MAX_PIXELS, set_gemm_route  # noqa: E402
from fakefacegen.losses import d_loss, g_loss  # noqa: E402
from fakefacegen.models import build_models  # noqa: E402

PATHS = {  # name: (dtype of weights and inputs, autocast dtype or None, GEMM route max pixels)
    "fp64 (baseline)": (torch.float64, None, 0),
    "fp32": (torch.float32, None, 0),
    "bf16 autocast": (torch.float32, torch.bfloat16, 0),
    "bf16 autocast + GEMM route": (torch.float32, torch.bfloat16, MAX_PIXELS),
}
OTHER = "fp64, another batch"


def grads(g, d, real, z, dtype, autocast, route) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat D and G gradients of one step's losses on copies of g and d in ``dtype``."""
    g, d = copy.deepcopy(g).to(dtype), copy.deepcopy(d).to(dtype)
    set_gemm_route(g, route)
    set_gemm_route(d, route)
    real, z = real.to(dtype), z.to(dtype)
    ctx = torch.autocast("cpu", dtype=autocast) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        fake = g(z)
        loss = d_loss(d(real), d(fake.detach()))
    gd = torch.autograd.grad(loss, list(d.parameters()))
    with ctx:
        loss = g_loss(d(fake))
    gg = torch.autograd.grad(loss, list(g.parameters()))
    flat = lambda gs: torch.cat([x.double().reshape(-1) for x in gs])  # noqa: E731
    return flat(gd), flat(gg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--arch", default="tutorial", choices=("tutorial", "reference"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=3, help="batches compared; medians reported (default 3)")
    ap.add_argument("--warm-steps", type=int, default=20, help="fp32 training steps before comparing (default 20)")
    args = ap.parse_args(argv)
    header("bench_fidelity: one step's gradients on each CPU path vs float64")
    with tempfile.TemporaryDirectory(prefix="bench_fidelity-") as tmp:
        data, what = dataset_for(args.res, Path(tmp), n=max(4 * args.batch, 256))
        ds = FaceDataset(data)
        print(
            f"data: {what}; {args.res} px, arch {args.arch}, batch {args.batch}, "
            f"{args.warm_steps} fp32 warm-up steps, {args.batches} batches compared"
        )
        torch.manual_seed(0)
        g, d = build_models(ModelConfig(resolution=args.res, arch=args.arch))
        rng = torch.Generator().manual_seed(0)

        def batch():
            idx = torch.randint(len(ds), (args.batch,), generator=rng).tolist()
            real = to_model_input(ds.__getitems__(idx), device=torch.device("cpu"), channels_last=False)
            return real, torch.randn(args.batch, g.z_dim, generator=rng)

        og = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
        od = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
        for _ in range(args.warm_steps):
            real, z = batch()
            fake = g(z)
            od.zero_grad()
            d_loss(d(real), d(fake.detach())).backward()
            od.step()
            og.zero_grad()
            g_loss(d(fake)).backward()
            og.step()

        rows = [*PATHS, OTHER]
        err: dict[str, dict[str, list[float]]] = {p: {"D": [], "G": [], "cosD": [], "cosG": []} for p in rows}
        for _ in range(args.batches):
            real, z = batch()
            ref = grads(g, d, real, z, *PATHS["fp64 (baseline)"])
            for name in rows:
                # OTHER: fp64 on the next batch, the same weights: the minibatch noise every step has anyway
                got = (
                    grads(g, d, *batch(), *PATHS["fp64 (baseline)"])
                    if name == OTHER
                    else grads(g, d, real, z, *PATHS[name])
                )
                for net, a, b in (("D", got[0], ref[0]), ("G", got[1], ref[1])):
                    err[name][net].append(float((a - b).norm() / b.norm()))
                    err[name]["cos" + net].append(float(torch.nn.functional.cosine_similarity(a, b, dim=0)))
    med = {p: {k: statistics.median(v) for k, v in e.items()} for p, e in err.items()}
    print(f"\n  {'path':<28s} {'D rel. error':>12s} {'G rel. error':>12s} {'D cosine':>9s} {'G cosine':>9s}")
    for name, m in med.items():
        print(f"  {name:<28s} {m['D']:12.2e} {m['G']:12.2e} {m['cosD']:9.5f} {m['cosG']:9.5f}")
    a, b = med["bf16 autocast"], med["bf16 autocast + GEMM route"]
    print(
        f"HEADLINE GEMM route / bf16 autocast error: D {b['D'] / a['D']:.2f}x, G {b['G'] / a['G']:.2f}x; "
        f"bf16 / fp32 error: D {a['D'] / med['fp32']['D']:.0f}x, G {a['G'] / med['fp32']['G']:.0f}x; "
        f"another batch / bf16 error: D {med[OTHER]['D'] / a['D']:.1f}x, G {med[OTHER]['G'] / a['G']:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
