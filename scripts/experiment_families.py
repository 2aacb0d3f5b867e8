"""The equal-budget family experiment: the style family (preset celeba64-style) against the best DCGAN
recipe (preset celeba64-best), the same images seen, several training seeds each.

    python scripts/experiment_families.py --data data/celeba64 --outdir runs/families
    python scripts/experiment_families.py --data data/celeba64 --outdir runs/families --budget 32000 --eval-n 2000

Each (family, seed) trains with `fakefacegen train` into OUTDIR/NNNNN-<family>-s<seed>/ (an unfinished run
is resumed from its last checkpoint, a complete one skipped), then is evaluated at the end with
`fakefacegen evaluate` (FID, KID and precision/recall; same N, same sampling seed, same real images
for every run) into RUN/eval-<N>.json; with --psi, the first seed of the style family is also
evaluated at each truncation psi into RUN/eval-<N>-psi<psi>.json. `fakefacegen compare` writes
OUTDIR/report/. Every step is skipped when its output exists, so the script can be stopped and
started again. Training images/s is in each run's log.jsonl and run.json (elapsed_s).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiment_common import compare, evaluate, train_or_resume

# name -> (preset, batch size). The first is the baseline.
FAMILIES: dict[str, tuple[str, int]] = {
    "dcgan-best": ("celeba64-best", 64),
    "style-w16": ("celeba64-style", 16),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="prepared 64x64 dataset (both ../shared folders)")
    ap.add_argument("--outdir", default="runs/families")
    ap.add_argument("--budget", type=int, default=162_816, help="images seen per run (default 162,816)")
    ap.add_argument("--eval-n", type=int, default=10_000, help="fake and real images per evaluation (default 10,000)")
    ap.add_argument("--seeds", default="0,1", help="training seeds (default 0,1)")
    ap.add_argument("--only", default="", help=f"comma list of families (default all: {', '.join(FAMILIES)})")
    ap.add_argument("--psi", default="", help="comma list of truncation psi for the style family's first seed")
    ap.add_argument("--threads", type=int, default=0, help="train.threads (0 = all cores)")
    args = ap.parse_args(argv)

    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    only = [n for n in args.only.split(",") if n]
    unknown = [n for n in only if n not in FAMILIES]
    if unknown:
        raise SystemExit(f"unknown famil(ies) {unknown}; known: {', '.join(FAMILIES)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    runs = []
    for family in only or list(FAMILIES):
        preset, batch = FAMILIES[family]
        for seed in seeds:
            rd = train_or_resume(
                out,
                f"{family}-s{seed}",
                args.data,
                preset,
                budget=args.budget,
                batch=batch,
                seed=seed,
                sets=[f"train.threads={args.threads}"],
            )
            evaluate(rd, args.data, args.eval_n, "fid,kid,pr", rd / f"eval-{args.eval_n}.json")
            if family.startswith("style") and seed == seeds[0]:
                for psi in (float(p) for p in args.psi.split(",") if p):
                    evaluate(
                        rd,
                        args.data,
                        args.eval_n,
                        "fid,kid,pr",
                        rd / f"eval-{args.eval_n}-psi{psi:g}.json",
                        ["--psi", str(psi)],
                    )
            runs.append(rd)
    compare(runs, out / "report", f"Model families at {args.budget:,} images seen")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
