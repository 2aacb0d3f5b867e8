"""Reading run directories: config.json, the train/eval records of log.jsonl, eval-*.json files,
run.json and the last fixed-noise grid, into one :class:`Run` per directory."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..rundir import EVAL_GLOB, FAKES_GLOB, FAKES_RE, RunDir, read_log, read_status

METRICS = ("fid", "kid")


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


def metric_value(v: Any) -> float | None:
    """A metric value as a finite float: numbers as they are, [mean, std] lists as the mean."""
    if isinstance(v, (list, tuple)):
        v = v[0] if v else None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def metric_std(rec: dict[str, Any], key: str) -> float | None:
    v = rec.get(key)
    if isinstance(v, (list, tuple)) and len(v) > 1:
        return metric_value(v[1])
    return metric_value(rec.get(f"{key}_std"))


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
        v = metric_value(d.get(k))
        if v is not None:
            rec[k] = v
            s = metric_std(d, k)
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
    rd = RunDir(p)
    if not p.is_dir() or not rd.is_run():
        raise CompareError(f"{p}: not a run directory (no config.json)")
    try:
        config = json.loads(rd.config.read_text())
    except (OSError, ValueError) as e:
        raise CompareError(f"{rd.config}: cannot read the run's config ({e})") from None
    if not isinstance(config, dict):
        raise CompareError(f"{rd.config}: not a config (expected a JSON object)")
    recs = read_log(rd.log)
    train = _by_step([r for r in recs if r.get("kind") == "train"])
    evals = _by_step([r for r in recs if r.get("kind") == "eval"])
    notes: list[str] = []
    eval_files = []
    for f in sorted(p.glob(EVAL_GLOB)):
        try:
            eval_files.append(_read_eval_file(f))
        except (OSError, ValueError) as e:
            notes.append(f"{f}: skipped, cannot read it as an evaluation result ({e})")
    status = read_status(p)
    grids = sorted((int(m.group(1)), f) for f in rd.samples.glob(FAKES_GLOB) if (m := FAKES_RE.match(f.name)))
    grid_step, grid = grids[-1] if grids else (None, None)
    return Run(p, name or p.name, config, train, evals, eval_files, status, grid, grid_step, notes)


def run_names(paths: list[Path]) -> list[str]:
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
