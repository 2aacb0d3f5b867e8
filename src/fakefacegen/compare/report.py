"""`fakefacegen compare`: read the runs, summarize, draw, render, and write the report directory."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from .figures import plot_losses, plot_metrics, side_by_side
from .render import fmt_value, render_html, render_markdown
from .runs import METRICS, CompareError, load_run, run_names
from .stats import SORTS, summarize

EXAMPLES = """examples:
  fakefacegen compare runs/00003-* runs/00004-* runs/00005-* --out report/
  fakefacegen compare runs/00010-baseline runs/00011-ema --metric kid --sort best --out report-ema/
  fakefacegen evaluate runs/00010-baseline --data data/celeba64 -n 10000 --out runs/00010-baseline/eval-10k.json

The first run is the baseline: every other run's config is shown as a diff against it.
Metrics come from the eval records in log.jsonl (train with --eval-every N) and from
eval-*.json files in a run directory (written by `fakefacegen evaluate ... --out RUN/eval-NAME.json`).
--sort auto ranks by the eval-*.json value when every run has one, else by the final logged value."""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def compare_runs(paths: list[str | Path], out: str | Path, *, metric: str = "auto", sort: str = "auto",
                 title: str | None = None) -> dict[str, Any]:
    """Read the runs, write ``out/index.html``, ``summary.json``, ``summary.md`` and the PNGs; return the summary."""
    if not paths:
        raise CompareError("compare needs at least one run directory (none given)")
    paths = [Path(p) for p in paths]
    names = run_names(paths) if all(p.is_dir() for p in paths) else [p.name for p in paths]
    runs = [load_run(p, n) for p, n in zip(paths, names)]
    summary = summarize(runs, metric=metric, sort=sort)
    summary["title"] = title
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CompareError(f"{out}: cannot create the report directory ({e.strerror})") from None

    colors = {row["name"]: row["color"] for row in summary["runs"]}
    images: dict[str, Path] = {}
    if (p := plot_losses(runs, colors, out / "losses.png")) is not None:
        images["losses"] = p
    if (p := plot_metrics(runs, summary["metrics"], colors, out / "metrics.png")) is not None:
        images["metrics"] = p
    by_name = {r.name: r for r in runs}
    grids: dict[str, Path] = {}
    for stale in out.glob("grid-[0-9][0-9]-*.png"):  # a previous report's grids (other ranks or runs)
        stale.unlink()
    for row in summary["runs"]:
        r = by_name[row["name"]]
        if r.grid is not None:  # only fakes-*.png: real.png holds real faces and is never copied
            dst = out / f"grid-{row['rank']:02d}-{_safe(r.name)}.png"
            shutil.copyfile(r.grid, dst)
            grids[r.name] = dst
            row["grid"] = dst.name
    if (p := side_by_side([(f"#{row['rank']} {row['name']}", grids[row["name"]])
                            for row in summary["runs"] if row["name"] in grids], out / "grids.png")) is not None:
        images["grids"] = p
    summary["images"] = {k: v.name for k, v in images.items()}

    (out / "index.html").write_text(render_html(summary, images, grids), encoding="utf-8")
    (out / "summary.md").write_text(render_markdown(summary), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``fakefacegen compare``."""
    desc = ("Compare training runs side by side: one self-contained HTML report with config diffs, loss and "
            "FID/KID curves, final sample grids and a ranked table, plus summary.json and summary.md.")
    s = sub.add_parser("compare", help=desc, description=desc, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run directories; the first is the baseline")
    s.add_argument("--out", default="report", help="report directory (default report/)")
    s.add_argument("--metric", default="auto", choices=("auto", *METRICS),
                   help="metric to rank by (default auto: the baseline's eval.metric if logged, else fid, else kid)")
    s.add_argument("--sort", default="auto", choices=SORTS,
                   help="rank by the final or best logged value, or by eval-*.json (default auto)")
    s.add_argument("--title", default=None, help="title of the report")
    s.set_defaults(func=run)
    return s


def run(args: argparse.Namespace) -> int:
    """Entry point of ``fakefacegen compare``."""
    summary = compare_runs(args.runs, args.out, metric=args.metric, sort=args.sort, title=args.title)
    for w in summary["warnings"]:
        print(f"note: {w}", file=sys.stderr)
    msg = f"wrote {Path(args.out) / 'index.html'}, summary.md and summary.json ({len(summary['runs'])} runs)"
    if summary["winner"]:
        best = next(r for r in summary["runs"] if r["is_best"])
        msg += (f"; best: {summary['winner']} ({summary['metric'].upper()} "
                f"{fmt_value(summary['metric'], best['rank_value'])}, {summary['sort']})")
    print(msg)
    return 0
