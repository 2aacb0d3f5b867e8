"""``fakefacegen compare``: training runs side by side in one HTML report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..compare.runs import METRICS
from ..compare.stats import SORTS
from .flags import subcommand

EXAMPLES = """examples:
  fakefacegen compare runs/00003-* runs/00004-* runs/00005-* --out report/
  fakefacegen compare runs/00010-baseline runs/00011-ema --metric kid --sort best --out report-ema/
  fakefacegen evaluate runs/00010-baseline --data data/celeba64 -n 10000 --out runs/00010-baseline/eval-10k.json

The first run is the baseline: every other run's config is shown as a diff against it.
Metrics come from the eval records in log.jsonl (train with --eval-every N) and from
eval-*.json files in a run directory (written by `fakefacegen evaluate ... --out RUN/eval-NAME.json`).
--sort auto ranks by the eval-*.json value when every run has one, else by the final logged value."""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = subcommand(
        sub,
        "compare",
        "Compare training runs side by side: one self-contained HTML report with config "
        "diffs, loss and FID/KID curves, final sample grids and a ranked table, plus summary.json and "
        "summary.md.",
        EXAMPLES,
    )
    s.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run directories; the first is the baseline")
    s.add_argument("--out", default="report", help="report directory (default report/)")
    s.add_argument(
        "--metric",
        default="auto",
        choices=("auto", *METRICS),
        help="metric to rank by (default auto: the baseline's eval.metric if logged, else fid, else kid)",
    )
    s.add_argument(
        "--sort",
        default="auto",
        choices=SORTS,
        help="rank by the final or best logged value, or by eval-*.json (default auto)",
    )
    s.add_argument("--title", default=None, help="title of the report")
    s.set_defaults(func=run)
    return s


def run(args: argparse.Namespace) -> int:
    from ..compare import compare_runs
    from ..compare.render import fmt_value

    summary = compare_runs(args.runs, args.out, metric=args.metric, sort=args.sort, title=args.title)
    for w in summary["warnings"]:
        print(f"note: {w}", file=sys.stderr)
    msg = f"wrote {Path(args.out) / 'index.html'}, summary.md and summary.json ({len(summary['runs'])} runs)"
    if summary["winner"]:
        best = next(r for r in summary["runs"] if r["is_best"])
        msg += (
            f"; best: {summary['winner']} ({summary['metric'].upper()} "
            f"{fmt_value(summary['metric'], best['rank_value'])}, {summary['sort']})"
        )
    print(msg)
    return 0
