"""`fakefacegen compare`: read the runs, summarize, draw, render, and write the report directory."""

from __future__ import annotations

import json
import re
import shutil
from functools import partial
from pathlib import Path
from typing import Any

from ..atomic import atomic_save, atomic_write_text, remove_stale_temps
from .figures import plot_losses, plot_metrics, side_by_side
from .render import render_html, render_markdown
from .runs import CompareError, load_run, run_names
from .stats import summarize


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def compare_runs(
    paths: list[str | Path], out: str | Path, *, metric: str = "auto", sort: str = "auto", title: str | None = None
) -> dict[str, Any]:
    """Read the runs, write ``out/index.html``, ``summary.json``, ``summary.md`` and the PNGs; return the summary."""
    if not paths:
        raise CompareError("compare needs at least one run directory (none given)")
    run_dirs = [Path(p) for p in paths]
    names = run_names(run_dirs) if all(p.is_dir() for p in run_dirs) else [p.name for p in run_dirs]
    runs = [load_run(p, n) for p, n in zip(run_dirs, names)]
    summary = summarize(runs, metric=metric, sort=sort)
    summary["title"] = title
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CompareError(f"{out}: cannot create the report directory ({e.strerror})") from None
    remove_stale_temps(out)  # the temp files of a compare that was killed here

    colors = {row["name"]: row["color"] for row in summary["runs"]}
    images: dict[str, Path] = {}
    if (p := plot_losses(runs, colors, out / "losses.png")) is not None:
        images["losses"] = p
    if (p := plot_metrics(runs, summary["metrics"], colors, out / "metrics.png")) is not None:
        images["metrics"] = p
    by_name = {r.name: r for r in runs}
    grids: dict[str, Path] = {}
    for row in summary["runs"]:
        r = by_name[row["name"]]
        if r.grid is not None:  # only fakes-*.png: real.png holds real faces and is never copied
            dst = out / f"grid-{row['rank']:02d}-{_safe(r.name)}.png"
            atomic_save(dst, partial(shutil.copyfile, r.grid))
            grids[r.name] = dst
            row["grid"] = dst.name
    if (
        p := side_by_side(
            [(f"#{row['rank']} {row['name']}", grids[row["name"]]) for row in summary["runs"] if row["name"] in grids],
            out / "grids.png",
        )
    ) is not None:
        images["grids"] = p
    summary["images"] = {k: v.name for k, v in images.items()}

    # Each file whole or not at all (atomic.py), the page last: a killed compare leaves the previous
    # report's page with the files it shows.
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "summary.md", render_markdown(summary))
    atomic_write_text(out / "index.html", render_html(summary, images, grids))
    for stale in set(out.glob("grid-[0-9][0-9]-*.png")) - set(grids.values()):  # a previous report's grids
        stale.unlink()
    return summary
