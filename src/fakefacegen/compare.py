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
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .plots import read_log

METRICS = ("fid", "kid")
SORTS = ("auto", "final", "best", "evaluate")
# Matplotlib's tab10: the same colour for a run in every plot and in the table.
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf")
FAKES_RE = re.compile(r"^fakes-(\d+)\.png$")

EXAMPLES = """examples:
  fakefacegen compare runs/00003-* runs/00004-* runs/00005-* --out report/
  fakefacegen compare runs/00010-baseline runs/00011-ema --metric kid --sort best --out report-ema/
  fakefacegen evaluate runs/00010-baseline --data data/celeba64 -n 10000 --out runs/00010-baseline/eval-10k.json

The first run is the baseline: every other run's config is shown as a diff against it.
Metrics come from the eval records in log.jsonl (train with --eval-every N) and from
eval-*.json files in a run directory (written by `fakefacegen evaluate ... --out RUN/eval-NAME.json`).
--sort auto ranks by the eval-*.json value when every run has one, else by the final logged value."""


class CompareError(ValueError):
    """A run directory or option is unusable; the message names it."""


@dataclass
class Run:
    """One run directory, read once."""

    path: Path
    name: str
    config: dict[str, Any]
    train: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    eval_files: list[dict[str, Any]]
    status: dict[str, Any]
    grid: Path | None
    grid_step: int | None
    notes: list[str] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return int(self.train[-1]["step"]) if self.train else int(self.status.get("step") or 0)

    @property
    def images_seen(self) -> int:
        if self.train:
            return int(self.train[-1].get("images_seen") or 0)
        return int(self.status.get("images_seen") or 0)

    @property
    def elapsed_s(self) -> float | None:
        if self.train and self.train[-1].get("elapsed_s") is not None:
            return float(self.train[-1]["elapsed_s"])
        v = self.status.get("elapsed_s")
        return float(v) if v is not None else None


# --------------------------------------------------------------------------------------------
# Reading runs


def _num(v: Any) -> float | None:
    """A metric value as a finite float: numbers as they are, [mean, std] lists as the mean."""
    if isinstance(v, (list, tuple)):
        v = v[0] if v else None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _std(rec: dict[str, Any], key: str) -> float | None:
    v = rec.get(key)
    if isinstance(v, (list, tuple)) and len(v) > 1:
        return _num(v[1])
    return _num(rec.get(f"{key}_std"))


def _by_step(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per step, the last one written: a resumed run re-logs the steps after its checkpoint."""
    out: dict[int, dict[str, Any]] = {}
    for r in recs:
        if isinstance(r.get("step"), (int, float)):
            out[int(r["step"])] = r
    return [out[s] for s in sorted(out)]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dict -> {"train.ema": 0.999, ...}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _read_eval_file(path: Path) -> dict[str, Any]:
    d = json.loads(path.read_text())
    if not isinstance(d, dict):
        raise ValueError("not a JSON object")
    rec: dict[str, Any] = {"file": path.name}
    for k in METRICS:
        v = _num(d.get(k))
        if v is not None:
            rec[k] = v
            s = _std(d, k)
            if s is not None:
                rec[f"{k}_std"] = s
    n = d.get("n_fake", d.get("n"))
    rec["n"] = int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else None
    label = (d.get("protocol") or {}).get("label") if isinstance(d.get("protocol"), dict) else None
    if label:
        rec["label"] = str(label)
    return rec


def load_run(path: str | Path, name: str | None = None) -> Run:
    """Read a run directory; a :class:`CompareError` naming it when it is not one."""
    p = Path(path)
    if not p.exists():
        raise CompareError(f"{p}: no such run directory")
    if not p.is_dir() or not (p / "config.json").is_file():
        raise CompareError(f"{p}: not a run directory (no config.json)")
    try:
        config = json.loads((p / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise CompareError(f"{p / 'config.json'}: cannot read the run's config ({e})") from None
    if not isinstance(config, dict):
        raise CompareError(f"{p / 'config.json'}: not a config (expected a JSON object)")
    recs = read_log(p / "log.jsonl")
    train = _by_step([r for r in recs if r.get("kind") == "train"])
    evals = _by_step([r for r in recs if r.get("kind") == "eval"])
    notes: list[str] = []
    eval_files = []
    for f in sorted(p.glob("eval-*.json")):
        try:
            eval_files.append(_read_eval_file(f))
        except (OSError, ValueError) as e:
            notes.append(f"{f}: skipped, cannot read it as an evaluation result ({e})")
    try:
        status = json.loads((p / "run.json").read_text())
        status = status if isinstance(status, dict) else {}
    except (OSError, ValueError):
        status = {}
    grids = sorted((int(m.group(1)), f) for f in (p / "samples").glob("fakes-*.png") if (m := FAKES_RE.match(f.name)))
    grid_step, grid = grids[-1] if grids else (None, None)
    return Run(p, name or p.name, config, train, evals, eval_files, status, grid, grid_step, notes)


def _names(paths: list[Path]) -> list[str]:
    """Directory names, or longer paths where two runs share a name (runs/a/00001-x, runs/b/00001-x)."""
    names = [p.resolve().name for p in paths]
    if len(set(names)) == len(names):
        return names
    out = []
    for p, n in zip(paths, names):
        out.append(str(p) if names.count(n) > 1 else n)
    if len(set(out)) < len(out):
        dup = next(n for n in out if out.count(n) > 1)
        raise CompareError(f"{dup}: the same run directory is given twice")
    return out


# --------------------------------------------------------------------------------------------
# Summary


def _interp(x: float, xs: list[float], ys: list[float]) -> float | None:
    """Piecewise-linear y at x (clamped to the ends); None without points."""
    if not xs:
        return None
    if x <= xs[0]:
        return ys[0] * (x / xs[0]) if xs[0] > 0 else ys[0]  # from (0, 0): training starts at 0 s
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
    return ys[-1]


def metric_curve(run: Run, key: str) -> list[dict[str, Any]]:
    """The run's logged ``key`` values: [{"step", "images_seen", "elapsed_s", "value", "std"}, ...].

    Eval records carry no clock, so ``elapsed_s`` is the training time (which excludes evaluation)
    at that step, interpolated between the train records around it.
    """
    xs = [float(r["step"]) for r in run.train if r.get("elapsed_s") is not None]
    ys = [float(r["elapsed_s"]) for r in run.train if r.get("elapsed_s") is not None]
    out = []
    for r in run.evals:
        v = _num(r.get(key))
        if v is None:
            continue
        out.append({"step": int(r["step"]), "images_seen": r.get("images_seen"),
                    "elapsed_s": _interp(float(r["step"]), xs, ys), "value": v, "std": _std(r, key)})
    return out


def _final_and_best(run: Run, metrics: list[str]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    final: dict[str, Any] | None = None
    best: dict[str, Any] = {}
    for k in metrics:
        curve = metric_curve(run, k)
        if not curve:
            continue
        last = curve[-1]
        if final is None or last["step"] > final["step"]:
            final = {"step": last["step"], "images_seen": last["images_seen"]}
        if last["step"] == final["step"]:
            final[k] = last["value"]
            if last["std"] is not None:
                final[f"{k}_std"] = last["std"]
        b = min(curve, key=lambda c: c["value"])  # the first of equal minima: reached soonest
        best[k] = {"value": b["value"], "step": b["step"], "images_seen": b["images_seen"]}
        if b["std"] is not None:
            best[k]["std"] = b["std"]
    return final, best


def _main_eval_file(run: Run, metric: str) -> dict[str, Any] | None:
    """The eval-*.json with the metric and the most images (most trustworthy); ties: the last by name."""
    files = [f for f in run.eval_files if metric in f]
    if not files:
        return None
    return max(enumerate(files), key=lambda t: ((t[1].get("n") or 0), t[0]))[1]


def _pick_metric(runs: list[Run], metric: str) -> str | None:
    def has(k: str) -> bool:
        return any(metric_curve(r, k) or any(k in f for f in r.eval_files) for r in runs)

    if metric != "auto":
        if metric not in METRICS:
            raise CompareError(f"--metric must be one of auto, {', '.join(METRICS)}; got {metric!r}")
        return metric
    preferred = str(flatten(runs[0].config).get("eval.metric") or "fid")
    for k in (preferred, *METRICS):
        if k in METRICS and has(k):
            return k
    return None


def _fmt_value(key: str, v: float | None, std: float | None = None) -> str:
    if v is None:
        return "—"
    s = f"{v:.2f}" if key == "fid" else f"{v:.4f}"
    if std is not None:
        s += f" ± {std:.2f}" if key == "fid" else f" ± {std:.4f}"
    return s


def fmt_duration(s: float | None) -> str:
    """Seconds -> '4.2 s', '3 min 20 s', '2 h 05 min'."""
    if s is None:
        return "—"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _fmt_cfg(v: Any) -> str:
    if isinstance(v, str):
        return v if v else '""'
    return json.dumps(v)


def summarize(runs: list[Run], metric: str = "auto", sort: str = "auto") -> dict[str, Any]:
    """Everything the report shows, as plain data (numbers unrounded, exactly as logged)."""
    if not runs:
        raise CompareError("compare needs at least one run directory")
    if sort not in SORTS:
        raise CompareError(f"--sort must be one of {', '.join(SORTS)}; got {sort!r}")
    key = _pick_metric(runs, metric)
    metrics = [k for k in METRICS if any(metric_curve(r, k) or any(k in f for f in r.eval_files) for r in runs)]
    if key is not None and key not in metrics:
        metrics.append(key)
    if sort == "auto":
        sort = "evaluate" if key and all(_main_eval_file(r, key) for r in runs) else "final"

    base = flatten(runs[0].config)
    rows = []
    for i, r in enumerate(runs):
        flat = flatten(r.config)
        diff = {k: {"baseline": base.get(k), "value": flat.get(k)}
                for k in sorted(set(base) | set(flat)) if base.get(k) != flat.get(k)}
        final, best = _final_and_best(r, metrics)
        evf = _main_eval_file(r, key) if key else None
        if key is None:
            rank_value = None
        elif sort == "final":
            rank_value = final.get(key) if final else None
        elif sort == "best":
            rank_value = best[key]["value"] if key in best else None
        else:
            rank_value = evf[key] if evf else None
        el = r.elapsed_s
        rows.append({
            "name": r.name, "path": str(r.path), "index": i, "color": COLORS[i % len(COLORS)],
            "status": r.status.get("status", "unknown"), "diff": {k: v["value"] for k, v in diff.items()},
            "diff_from_baseline": diff, "steps": r.steps, "images_seen": r.images_seen,
            "batch_size": flat.get("train.batch_size"), "elapsed_s": el,
            "img_per_s": (r.images_seen / el) if el else None,
            "eval_n": flat.get("eval.n"), "final": final, "best": best, "evaluate": r.eval_files,
            "evaluate_main": evf, "rank_value": rank_value,
            "grid_step": r.grid_step, "grid": None,
        })
    # Lower FID/KID is better; runs without the metric go last, in the order given.
    order = sorted(rows, key=lambda row: (row["rank_value"] is None, row["rank_value"] or 0.0, row["index"]))
    valued = [row["rank_value"] for row in order if row["rank_value"] is not None]
    best_value = min(valued) if valued else None
    for rank, row in enumerate(order, 1):
        row["rank"] = rank
        row["is_best"] = best_value is not None and row["rank_value"] == best_value

    summary = {
        "title": None, "created": time.strftime("%Y-%m-%d %H:%M:%S"), "metric": key, "metrics": metrics,
        "sort": sort, "baseline": runs[0].name,
        "winner": next((row["name"] for row in order if row["is_best"]), None),
        "budgets_differ": len({r.images_seen for r in runs}) > 1,
        "warnings": _warnings(runs, rows, key, sort), "runs": order,
        "diff_keys": sorted({k for row in rows for k in row["diff"]}),
    }
    return summary


def _warnings(runs: list[Run], rows: list[dict[str, Any]], key: str | None, sort: str) -> list[str]:
    w: list[str] = []
    for r in runs:
        w.extend(r.notes)
    seen = {r.name: r.images_seen for r in runs}
    if len(set(seen.values())) > 1:
        lo, hi = min(seen, key=seen.get), max(seen, key=seen.get)
        w.append(f"Budgets differ: images seen range from {seen[lo]:,} ({lo}) to {seen[hi]:,} ({hi}); "
                 f"final values are not at equal compute: read the curves at equal steps/time.")
    flats = [flatten(r.config) for r in runs]

    def differs(k: str) -> bool:
        return len({json.dumps(f.get(k)) for f in flats}) > 1

    if differs("data"):
        w.append("data differs: if these are different datasets, the runs' metrics are not comparable.")
    if differs("model.resolution"):
        w.append("Runs have different resolutions (model.resolution differs): their metrics are not comparable.")
    if key and sort != "evaluate":
        ns = {row["eval_n"] for row in rows if row["final"]}
        if len(ns) > 1:
            w.append(f"{key.upper()} was computed with different eval.n ({', '.join(map(str, sorted(ns)))}): "
                     f"small N biases FID upward, so the values are not comparable.")
    if key and sort == "evaluate":
        ns = {(row["evaluate_main"] or {}).get("n") for row in rows}
        if len(ns) > 1:
            w.append(f"The eval-*.json files used for ranking were computed with different numbers of images "
                     f"({', '.join(str(n) for n in ns)}): the values are not comparable.")
    if differs("train.loss"):
        w.append("train.loss differs: D/G loss values are on different scales; compare the metric, not the losses.")
    for r in runs:
        st = r.status.get("status")
        if st and st != "complete":
            w.append(f"{r.name} is {st} (run.json): its numbers may not be final.")
    if key is None:
        w.append("No FID/KID recorded in any run: train with --eval-every N, or write "
                 "`fakefacegen evaluate RUN --data DATA --out RUN/eval-10k.json`.")
    else:
        missing = [row["name"] for row in rows if row["rank_value"] is None]
        if missing:
            w.append(f"No {key.upper()} ({sort}) for {', '.join(missing)}: listed last, unranked.")
    return w


# --------------------------------------------------------------------------------------------
# Plots and images


def _plot_losses(runs: list[Run], colors: dict[str, str], path: Path) -> Path | None:
    if not any(r.train for r in runs):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        if not r.train:
            continue
        steps = [t["step"] for t in r.train]
        for ax, k in zip(axes, ("loss_d", "loss_g")):
            ax.plot(steps, [t.get(k, float("nan")) for t in r.train], color=colors[r.name], lw=1, label=r.name)
    for ax, title in zip(axes, ("D loss", "G loss")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_metrics(runs: list[Run], metrics: list[str], colors: dict[str, str], path: Path) -> Path | None:
    curves = {(r.name, k): metric_curve(r, k) for r in runs for k in metrics}
    keys = [k for k in metrics if any(curves[(r.name, k)] for r in runs)]
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Steps mean different compute when batch sizes differ: then also plot against images seen.
    xs = [("step", "step"), ("elapsed_s", "training time (s, excluding evaluation)")]
    if len({flatten(r.config).get("train.batch_size") for r in runs}) > 1:
        xs.append(("images_seen", "images seen"))
    fig, axes = plt.subplots(len(keys), len(xs), figsize=(5 * len(xs), 3.8 * len(keys)), squeeze=False)
    for row, k in zip(axes, keys):
        for ax, (xk, label) in zip(row, xs):
            for r in runs:
                c = [p for p in curves[(r.name, k)] if p[xk] is not None]
                if c:
                    ax.plot([p[xk] for p in c], [p["value"] for p in c], marker="o", ms=3, lw=1.2,
                            color=colors[r.name], label=r.name)
            ax.set_xlabel(label)
            ax.set_ylabel(f"{k.upper()} (lower is better)")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def _side_by_side(items: list[tuple[str, Path]], path: Path) -> Path | None:
    """The grids in one PNG, each captioned with its run's name (for summary.md)."""
    if not items:
        return None
    from PIL import Image, ImageDraw

    imgs = [(label, Image.open(p).convert("RGB")) for label, p in items]
    gap, cap = 8, 16
    w = sum(im.width for _, im in imgs) + gap * (len(imgs) + 1)
    h = max(im.height for _, im in imgs) + cap + 2 * gap
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    x = gap
    for label, im in imgs:
        draw.text((x, gap // 2), label[: max(4, im.width // 6)], fill="black")
        canvas.paste(im, (x, gap + cap))
        x += im.width + gap
    canvas.save(path, format="PNG")
    return path


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


# --------------------------------------------------------------------------------------------
# HTML and markdown

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:0.9em} th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.best td{background:#d9f2d9;font-weight:600}
.swatch{display:inline-block;width:10px;height:10px;margin-right:6px;border-radius:2px}
.warn{background:#fff4d6;border:1px solid #e0c060;padding:8px 12px;margin:12px 0}
.warn li{margin:2px 0} td.changed{background:#fff4d6} code{font-size:0.95em}
.grids{display:flex;flex-wrap:wrap;gap:16px} figure{margin:0;width:280px}
figure img{width:100%;image-rendering:pixelated;border:3px solid #ccc} figure.best img{border-color:#2a2}
figcaption{font-size:0.85em;margin-top:4px;word-break:break-all} img.plot{max-width:100%}
.muted{color:#777}
"""


def _diff_text(row: dict[str, Any]) -> str:
    if row["index"] == 0:
        return "baseline"
    return ", ".join(f"{k}={_fmt_cfg(v)}" for k, v in row["diff"].items()) or "(same config)"


def _columns(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(header, cell kind) of the metric columns present."""
    cols = []
    for k in summary["metrics"]:
        cols += [(f"final {k.upper()}", f"final:{k}"), (f"best {k.upper()} (step)", f"best:{k}")]
    if any(row["evaluate_main"] for row in summary["runs"]) and summary["metric"]:
        cols.append((f"evaluate {summary['metric'].upper()} (N)", "evaluate"))
    return cols


def _cell(row: dict[str, Any], kind: str, summary: dict[str, Any]) -> tuple[str, float | None]:
    if kind == "evaluate":
        e, k = row["evaluate_main"], summary["metric"]
        if not e:
            return "—", None
        return f"{_fmt_value(k, e[k], e.get(f'{k}_std'))} (N={e.get('n') or '?'})", e[k]
    part, k = kind.split(":")
    if part == "final":
        f = row["final"] or {}
        return _fmt_value(k, f.get(k), f.get(f"{k}_std")), f.get(k)
    b = row["best"].get(k)
    if not b:
        return "—", None
    return f"{_fmt_value(k, b['value'], b.get('std'))} (@{b['step']})", b["value"]


def render_html(summary: dict[str, Any], images: dict[str, Path], grids: dict[str, Path]) -> str:
    """The report page; every image is embedded, so the file stands alone."""
    e = html.escape
    rank_label = {"final": "the final logged value", "best": "the best logged value",
                  "evaluate": "the eval-*.json value"}[summary["sort"]]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(summary['title'] or 'FakeFaceGen run comparison')}</title>", f"<style>{CSS}</style></head><body>",
           f"<h1>{e(summary['title'] or 'FakeFaceGen run comparison')}</h1>",
           f"<p class=\"muted\">{len(summary['runs'])} runs, generated {e(summary['created'])} by "
           f"<code>fakefacegen compare</code>. Baseline (first run): <b>{e(summary['baseline'])}</b>.</p>"]
    if summary["winner"]:
        w = next(r for r in summary["runs"] if r["name"] == summary["winner"])
        out.append(f"<p>Best: <b>{e(w['name'])}</b> with {summary['metric'].upper()} "
                   f"{e(_fmt_value(summary['metric'], w['rank_value']))} ({e(rank_label)}; lower is better).</p>")
    if summary["warnings"]:
        out.append('<div class="warn"><b>Read with care:</b><ul>'
                   + "".join(f"<li>{e(x)}</li>" for x in summary["warnings"]) + "</ul></div>")

    # ---- Results table -------------------------------------------------------------------
    mcols = _columns(summary)
    heads = ["rank", "run", "config diff vs baseline", "status", "steps", "images seen", "training time",
             "img/s", *[h for h, _ in mcols]]
    out.append(f"<h2>Results</h2><p>Sorted by {summary['metric'].upper() if summary['metric'] else '(no metric)'}: "
               f"{e(rank_label)}. The highlighted row is the best.</p>")
    out.append('<table class="results"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in heads)
               + "</tr></thead><tbody>")
    for row in summary["runs"]:
        cells = [f'<td class="num">{row["rank"]}{" ★" if row["is_best"] else ""}</td>',
                 f'<td title="{e(row["path"])}"><span class="swatch" style="background:{row["color"]}"></span>'
                 f'{e(row["name"])}</td>',
                 f"<td><code>{e(_diff_text(row))}</code></td>", f"<td>{e(str(row['status']))}</td>",
                 f'<td class="num">{row["steps"]:,}</td>', f'<td class="num">{row["images_seen"]:,}</td>',
                 f'<td class="num">{e(fmt_duration(row["elapsed_s"]))}</td>',
                 f'<td class="num">{row["img_per_s"]:.0f}</td>' if row["img_per_s"] else '<td class="num">—</td>']
        for _, kind in mcols:
            text, value = _cell(row, kind, summary)
            attr = f' data-value="{value!r}"' if value is not None else ""
            cells.append(f'<td class="num" data-col="{e(kind)}"{attr}>{e(text)}</td>')
        cls = ' class="best"' if row["is_best"] else ""
        out.append(f'<tr{cls} data-run="{e(row["name"])}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table>")

    # ---- Config diff ---------------------------------------------------------------------
    in_order = sorted(summary["runs"], key=lambda r: r["index"])
    out.append("<h2>Config differences</h2>")
    if summary["diff_keys"]:
        out.append('<table class="config"><thead><tr><th>key</th>'
                   + "".join(f"<th>{e(r['name'])}</th>" for r in in_order) + "</tr></thead><tbody>")
        for k in summary["diff_keys"]:
            vals = []
            for r in in_order:
                d = r["diff_from_baseline"].get(k)
                # A run without a diff on k has the baseline's value, which any diff on k records.
                v = d["value"] if d else next((x["diff_from_baseline"][k]["baseline"] for x in in_order
                                               if k in x["diff_from_baseline"]), None)
                vals.append(f'<td class="changed">{e(_fmt_cfg(v))}</td>' if d else f"<td>{e(_fmt_cfg(v))}</td>")
            out.append(f"<tr><td><code>{e(k)}</code></td>" + "".join(vals) + "</tr>")
        out.append("</tbody></table>")
    else:
        out.append("<p>All runs have the same config.</p>")

    # ---- Plots and grids ------------------------------------------------------------------
    if "losses" in images:
        out.append("<h2>Losses</h2>"
                   f'<img class="plot" alt="D and G losses" src="{_data_uri(images["losses"])}">')
    out.append("<h2>Metrics</h2>")
    if "metrics" in images:
        out.append(f'<img class="plot" alt="metric curves" src="{_data_uri(images["metrics"])}">')
    else:
        out.append("<p>No metric curves: no eval records in log.jsonl (train with <code>--eval-every N</code>).</p>")
    out.append("<h2>Final fixed-noise samples</h2><p class=\"muted\">The same noise for every run "
               "(the EMA generator where train.ema &gt; 0).</p><div class=\"grids\">")
    for row in summary["runs"]:
        g = grids.get(row["name"])
        cls = ' class="best"' if row["is_best"] else ""
        if g is None:
            out.append(f"<figure{cls}><p class=\"muted\">no samples</p><figcaption>{e(row['name'])}</figcaption></figure>")
            continue
        out.append(f'<figure{cls}><img alt="samples of {e(row["name"])}" src="{_data_uri(g)}">'
                   f"<figcaption>{row['rank']}. {e(row['name'])} (step {row['grid_step']:,})</figcaption></figure>")
    out.append("</div></body></html>")
    return "\n".join(out) + "\n"


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(summary: dict[str, Any]) -> str:
    """summary.md: the results table (and warnings) for docs/."""
    k = summary["metric"]
    lines = [f"# {summary['title'] or 'Run comparison'}", "",
             f"{len(summary['runs'])} runs compared with `fakefacegen compare` on {summary['created']}; "
             f"baseline: `{summary['baseline']}`."]
    if k:
        lines.append(f"Ranked by {k.upper()} ({summary['sort']}, lower is better)"
                     + (f"; best: **{summary['winner']}**." if summary["winner"] else "."))
    lines.append("")
    if summary["warnings"]:
        lines += ["Notes:", ""] + [f"- {_md(w)}" for w in summary["warnings"]] + [""]
    heads = ["rank", "run", "config diff", "images seen", "wall-clock"]
    cols = []
    for m in summary["metrics"]:
        cols += [(f"final {m.upper()}", f"final:{m}"), (f"best {m.upper()} (step)", f"best:{m}")]
    if k and any(r["evaluate_main"] for r in summary["runs"]):
        cols.append((f"evaluate {k.upper()} (N)", "evaluate"))
    heads += [h for h, _ in cols]
    lines += ["| " + " | ".join(heads) + " |", "|" + "|".join("---:" if i in (0, 3) or i > 4 else "---"
                                                             for i in range(len(heads))) + "|"]
    for row in summary["runs"]:
        name = f"**{row['name']}**" if row["is_best"] else f"`{row['name']}`"
        cells = [str(row["rank"]), name, _md(_diff_text(row)), f"{row['images_seen']:,}",
                 fmt_duration(row["elapsed_s"])]
        for _, kind in cols:
            text = _cell(row, kind, summary)[0]
            cells.append(f"**{_md(text)}**" if row["is_best"] and text != "—" else _md(text))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------


def compare_runs(paths: list[str | Path], out: str | Path, *, metric: str = "auto", sort: str = "auto",
                 title: str | None = None) -> dict[str, Any]:
    """Read the runs, write ``out/index.html``, ``summary.json``, ``summary.md`` and the PNGs; return the summary."""
    if not paths:
        raise CompareError("compare needs at least one run directory (none given)")
    paths = [Path(p) for p in paths]
    names = _names(paths) if all(p.is_dir() for p in paths) else [p.name for p in paths]
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
    if (p := _plot_losses(runs, colors, out / "losses.png")) is not None:
        images["losses"] = p
    if (p := _plot_metrics(runs, summary["metrics"], colors, out / "metrics.png")) is not None:
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
    if (p := _side_by_side([(f"#{row['rank']} {row['name']}", grids[row["name"]])
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
                f"{_fmt_value(summary['metric'], best['rank_value'])}, {summary['sort']})")
    print(msg)
    return 0
