"""Side-by-side comparison of training runs: which recipe gave the better faces for the compute?

``fakefacegen compare RUN_DIR [RUN_DIR ...] --out report/`` reads each run directory (``config.json``,
``log.jsonl``, ``samples/fakes-*.png``, ``run.json`` and any ``eval-*.json`` written by
``fakefacegen evaluate RUN --out RUN/eval-NAME.json``) and writes into ``--out``:

* ``index.html``: one self-contained page (images as base64 data URIs, inline CSS, no JS) with a
  results table (best row highlighted, sorted by the metric), each run's config diff against the
  first run, D/G loss curves overlaid, FID/KID against step and against training time, and the
  final fixed-noise grids side by side;
* the same images as PNGs (``losses.png``, ``metrics.png``, ``grid-NN-<run>.png``, ``grids.png``);
* ``summary.json`` (every number, unrounded, as read from the logs) and ``summary.md`` (a markdown
  table for docs/).

Only generated grids (``samples/fakes-*.png``) are copied; ``samples/real.png`` (real faces) never is.

    from fakefacegen.compare import compare_runs
    summary = compare_runs(["runs/00003-a", "runs/00004-b"], "report/")
    summary["winner"]   # name of the run with the lowest metric

Layout: :mod:`.runs` reads a run directory, :mod:`.stats` turns runs into the summary (curves,
ranking, warnings), :mod:`.figures` draws the PNGs, :mod:`.render` writes the HTML page and
summary.md from the summary, and :mod:`.report` ties them together (``compare_runs``); the
subcommand's flags are in ``commands/compare.py``.
"""

from __future__ import annotations

from .figures import plot_losses, plot_metrics, side_by_side
from .render import CSS, fmt_duration, fmt_value, render_html, render_markdown
from .report import compare_runs
from .runs import METRICS, CompareError, Run, flatten, load_run
from .stats import COLORS, SORTS, metric_curve, summarize

__all__ = [
    "COLORS",
    "CSS",
    "METRICS",
    "SORTS",
    "CompareError",
    "Run",
    "compare_runs",
    "flatten",
    "fmt_duration",
    "fmt_value",
    "load_run",
    "metric_curve",
    "plot_losses",
    "plot_metrics",
    "render_html",
    "render_markdown",
    "side_by_side",
    "summarize",
]
