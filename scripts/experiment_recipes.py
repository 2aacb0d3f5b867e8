"""The equal-budget recipe experiment: the reference DCGAN recipe and variants, same images seen.

    python scripts/experiment_recipes.py --data data/celeba64 --outdir runs/recipes
    python scripts/experiment_recipes.py --data data/celeba64 --outdir runs/recipes --budget 64000 --eval-n 10000

Each variant trains with `fakefacegen train` into OUTDIR/NNNNN-<name>/ (a run that exists is resumed from its
last checkpoint; a complete one is skipped), is evaluated once at the end with `fakefacegen evaluate`
(same N, same seed, same real images for every run; written to RUN/eval-<N>.json and skipped when
present) and finally `fakefacegen compare` writes OUTDIR/report/ (index.html, summary.md,
summary.json). Safe to stop and start again: it picks up where it was.

Every variant runs on the kernel-4 DCGAN of pytorch/examples at 64x64 (preset celeba64-tutorial) with
the same seed; the budget is counted in images seen, so a batch-64 variant gets twice the steps of a
batch-128 one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiment_common import compare, evaluate, train_or_resume

# name -> (batch size, --set overrides). The first is the baseline the others are compared with.
VARIANTS: dict[str, tuple[int, list[str]]] = {
    "reference": (128, []),
    "ema": (128, ["train.ema=0.995", "train.ema_start=50"]),
    "diffaug": (128, ["train.augment=color,translation"]),
    "hinge-sn-ttur": (
        128,
        [
            "train.loss=hinge",
            "model.spectral_norm=true",
            "model.d_norm=none",
            "g_opt.lr=0.0001",
            "d_opt.lr=0.0004",
            "g_opt.beta1=0.0",
            "g_opt.beta2=0.9",
            "d_opt.beta1=0.0",
            "d_opt.beta2=0.9",
        ],
    ),
    "ema-diffaug-b64": (64, ["train.ema=0.995", "train.ema_start=100", "train.augment=color,translation"]),
    "b64": (64, []),
    # Preset celeba64-cpu (the bundled model until 2026-11-30): the winner's switches with a longer EMA horizon.
    "ema999-diffaug-b64": (64, ["train.ema=0.999", "train.ema_start=1000", "train.augment=color,translation"]),
}
# Variants run when --only is not given (the 32k table); the others are opt-in.
DEFAULT_VARIANTS = ("reference", "ema", "diffaug", "hinge-sn-ttur", "ema-diffaug-b64", "b64")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="prepared 64x64 dataset (both ../shared folders)")
    ap.add_argument("--outdir", default="runs/recipes")
    ap.add_argument("--budget", type=int, default=32000, help="images seen per run (default 32,000)")
    ap.add_argument("--eval-n", type=int, default=2000, help="fake and real images per evaluation")
    ap.add_argument("--only", default="", help="comma list of variants to run (default: the six of the 32k table)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    only = [n for n in args.only.split(",") if n]
    unknown = [n for n in only if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    names = [n for n in VARIANTS if n in only] if only else list(DEFAULT_VARIANTS)
    runs = []
    for name in names:
        batch, sets = VARIANTS[name]
        steps = args.budget // batch
        every = [f"train.ckpt_every={max(steps // 4, 1)}", f"train.sample_every={max(steps // 4, 1)}"]
        rd = train_or_resume(
            out,
            name,
            args.data,
            "celeba64-tutorial",
            budget=args.budget,
            batch=batch,
            seed=args.seed,
            sets=every + sets,
        )
        evaluate(rd, args.data, args.eval_n, "fid,kid", rd / f"eval-{args.eval_n}.json")
        runs.append(rd)
    compare(runs, out / "report", f"Recipes at {args.budget:,} images seen")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
