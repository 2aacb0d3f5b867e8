"""The numbers of a comparison: metric curves, final and best values, the ranking and the warnings."""

from __future__ import annotations

import json
import time
from typing import Any

from .runs import METRICS, CompareError, Run, flatten, metric_std, metric_value

SORTS = ("auto", "final", "best", "evaluate")
# Matplotlib's tab10: the same colour for a run in every plot and in the table.
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


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
        v = metric_value(r.get(key))
        if v is None:
            continue
        out.append(
            {
                "step": int(r["step"]),
                "images_seen": r.get("images_seen"),
                "elapsed_s": _interp(float(r["step"]), xs, ys),
                "value": v,
                "std": metric_std(r, key),
            }
        )
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
        diff = {
            k: {"baseline": base.get(k), "value": flat.get(k)}
            for k in sorted(set(base) | set(flat))
            if base.get(k) != flat.get(k)
        }
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
        rows.append(
            {
                "name": r.name,
                "path": str(r.path),
                "index": i,
                "color": COLORS[i % len(COLORS)],
                "status": r.status.get("status", "unknown"),
                "diff": {k: v["value"] for k, v in diff.items()},
                "diff_from_baseline": diff,
                "steps": r.steps,
                "images_seen": r.images_seen,
                "batch_size": flat.get("train.batch_size"),
                "elapsed_s": el,
                "img_per_s": (r.images_seen / el) if el else None,
                "eval_n": flat.get("eval.n"),
                "final": final,
                "best": best,
                "evaluate": r.eval_files,
                "evaluate_main": evf,
                "rank_value": rank_value,
                "grid_step": r.grid_step,
                "grid": None,
            }
        )
    # Lower FID/KID is better; runs without the metric go last, in the order given.
    order = sorted(rows, key=lambda row: (row["rank_value"] is None, row["rank_value"] or 0.0, row["index"]))
    valued = [row["rank_value"] for row in order if row["rank_value"] is not None]
    best_value = min(valued) if valued else None
    for rank, row in enumerate(order, 1):
        row["rank"] = rank
        row["is_best"] = best_value is not None and row["rank_value"] == best_value

    summary = {
        "title": None,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "metric": key,
        "metrics": metrics,
        "sort": sort,
        "baseline": runs[0].name,
        "winner": next((row["name"] for row in order if row["is_best"]), None),
        "budgets_differ": len({r.images_seen for r in runs}) > 1,
        "warnings": _warnings(runs, rows, key, sort),
        "runs": order,
        "diff_keys": sorted({k for row in rows for k in row["diff"]}),
    }
    return summary


def _warnings(runs: list[Run], rows: list[dict[str, Any]], key: str | None, sort: str) -> list[str]:
    w: list[str] = []
    for r in runs:
        w.extend(r.notes)
    seen = {r.name: r.images_seen for r in runs}
    if len(set(seen.values())) > 1:
        lo, hi = min(seen, key=seen.__getitem__), max(seen, key=seen.__getitem__)
        w.append(
            f"Budgets differ: images seen range from {seen[lo]:,} ({lo}) to {seen[hi]:,} ({hi}); "
            f"final values are not at equal compute: read the curves at equal steps/time."
        )
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
            w.append(
                f"{key.upper()} was computed with different eval.n ({', '.join(map(str, sorted(ns)))}): "
                f"small N biases FID upward, so the values are not comparable."
            )
    if key and sort == "evaluate":
        ns = {(row["evaluate_main"] or {}).get("n") for row in rows}
        if len(ns) > 1:
            w.append(
                f"The eval-*.json files used for ranking were computed with different numbers of images "
                f"({', '.join(str(n) for n in ns)}): the values are not comparable."
            )
    if differs("train.loss"):
        w.append("train.loss differs: D/G loss values are on different scales; compare the metric, not the losses.")
    for r in runs:
        st = r.status.get("status")
        if st and st != "complete":
            w.append(f"{r.name} is {st} (run.json): its numbers may not be final.")
    if key is None:
        w.append(
            "No FID/KID recorded in any run: train with --eval-every N, or write "
            "`fakefacegen evaluate RUN --data DATA --out RUN/eval-10k.json`."
        )
    else:
        missing = [row["name"] for row in rows if row["rank_value"] is None]
        if missing:
            w.append(f"No {key.upper()} ({sort}) for {', '.join(missing)}: listed last, unranked.")
    return w
