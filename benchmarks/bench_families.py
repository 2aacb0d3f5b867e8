"""The two model families side by side: parameters, FLOPs per image and training images/s.

For each resolution, the DCGAN of preset ``celeba64-best`` (kernel-4 layout, width 64, batch 64) and
the style family of preset ``celeba64-style`` (width 16, batch 16), each as its preset trains it:

* parameters of G and D;
* FLOPs per image (torch's FlopCounterMode: matrix products and convolutions, forward and backward)
  of G's forward pass and of one whole training step (D phase + G phase, no lazy-R1 step), divided
  by the batch;
* images/s of real ``Trainer`` steps (its own data, noise, augmentation, both updates), as medians of
  interleaved repeats, with the spread, and the share of the measured matmul peak that is.

    python benchmarks/bench_families.py                  # 64 and 128 px, 5 repeats of 6 steps
    python benchmarks/bench_families.py --res 64 --steps 10 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import (  # noqa: E402
    count_flops,
    dataset_for,
    header,
    interleaved,
    matmul_peaks,
    median,
    quiet_trainer,
    trainer_seconds_per_step,
)

from fakefacegen import train as train_mod  # noqa: E402
from fakefacegen.config import make_config  # noqa: E402

FAMILIES = {"dcgan (celeba64-best)": "celeba64-best", "style (celeba64-style)": "celeba64-style"}


def make_trainer(preset: str, res: int, data: Path, outdir: Path) -> train_mod.Trainer:
    ov = [
        f"model.resolution={res}",
        "train.steps=1000000000",
        "train.log_every=1000000000",
        "train.sample_every=1000000000",
        "train.ckpt_every=1000000000",
        "eval.every=0",
    ]
    return quiet_trainer(make_config(preset, ov, data=str(data)), outdir, preset)


def step_flops(tr: train_mod.Trainer) -> int:
    """FLOPs of one non-regularising GAN step on a batch of the preset's size."""
    t, res = tr.cfg.train, tr.cfg.model.resolution
    real = torch.rand(t.batch_size, 3, res, res) * 2 - 1
    z = torch.randn(t.batch_size, tr.cfg.model.z_dim)
    step = 1  # r1_every > 1 in both presets: step 1 is not a lazy-regularisation step
    assert not tr.gan_step.regularises(step)
    return count_flops(lambda: tr.gan_step(step, real, z, lambda x: x))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", default="64,128", help="comma list of resolutions (default 64,128)")
    ap.add_argument("--steps", type=int, default=6, help="training steps per repeat (default 6)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats (default 5)")
    args = ap.parse_args(argv)
    header("model families: parameters, FLOPs per image, training images/s")
    peaks = matmul_peaks(repeats=3)
    print(f"matmul peaks: fp32 {peaks['fp32']:.1f}, bf16 {peaks['bf16']:.1f} GFLOP/s\n")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        for res in (int(r) for r in args.res.split(",")):
            data, _ = dataset_for(res, tmp)
            trainers = {name: make_trainer(p, res, data, tmp / f"runs{res}") for name, p in FAMILIES.items()}
            info = {}
            for name, tr in trainers.items():
                g, d = train_mod._unwrap(tr.g), train_mod._unwrap(tr.d)
                b = tr.cfg.train.batch_size
                z = torch.randn(b, tr.cfg.model.z_dim)
                g_fwd = (
                    count_flops(lambda: g(z)) / b
                )  # (with autograd on: torch's flop counter fails under no_grad here)
                info[name] = {
                    "batch": b,
                    "G params": sum(p.numel() for p in g.parameters()),
                    "D params": sum(p.numel() for p in d.parameters()),
                    "G fwd": g_fwd,
                    "step": step_flops(tr) / b,
                }
                trainer_seconds_per_step(tr, 2)  # warm-up: first-call allocations and oneDNN primitive creation
            print(f"-- {res} px: {args.repeats} interleaved repeats of {args.steps} steps --")
            times = interleaved(
                {n: (lambda tr=tr: trainer_seconds_per_step(tr, args.steps)) for n, tr in trainers.items()},
                args.repeats,
            )
            print(
                f"\n{'family':<24s} {'batch':>5s} {'G params':>10s} {'D params':>10s} {'G fwd MFLOP/img':>16s} "
                f"{'step GFLOP/img':>15s} {'img/s (median)':>15s} {'spread':>15s} {'% peak':>7s} {'path':>5s}"
            )
            ips = {}
            for name, i in info.items():
                per = [i["batch"] / s for s in times[name]]
                ips[name] = median(per)
                # the share of the peak of the precision the trainer's fast path computes in
                peak = peaks["bf16" if trainers[name].fast.precision == "bf16" else "fp32"]
                pct = 100 * ips[name] * i["step"] / 1e9 / peak
                print(
                    f"{name:<24s} {i['batch']:>5d} {i['G params']:>10,d} {i['D params']:>10,d} "
                    f"{i['G fwd'] / 1e6:>16.1f} {i['step'] / 1e9:>15.2f} {ips[name]:>15.1f} "
                    f"{min(per):>7.1f}-{max(per):<7.1f} {pct:>6.1f}% {trainers[name].fast.precision:>5s}"
                )
            a, b = ips.values()
            print(f"style / dcgan images/s: {b / a:.2f}x\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
