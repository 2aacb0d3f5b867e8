"""What the page shows about the loaded model: name, resolution, images seen and FID, from the
generator's metadata, a model card beside it (JSON or markdown), or the run's log.jsonl."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..generate import LoadedGenerator, bundled_model_path
from ..rundir import RunDir, read_log
from .params import (
    MAX_FRAMES,
    MAX_GRID,
    MAX_SCALE,
    MAX_SIDE,
    SEED_MAX,
    TRUNCATION_RANGE,
)


def _fid_from_log(run: RunDir, step: int | None) -> dict[str, Any] | None:
    """The FID logged for ``step`` in the run's log.jsonl (else the last one logged at or before it)."""
    best = None
    for rec in read_log(run.log):
        if rec.get("kind") != "eval" or not isinstance(rec.get("fid"), (int, float)):
            continue
        if step is not None and isinstance(rec.get("step"), int) and rec["step"] > step:
            continue
        best = rec
    if best is None:
        return None
    return {
        "fid": float(best["fid"]),
        "fid_n": best.get("n"),
        "fid_step": best.get("step"),
        "fid_source": f"{run.log.name} of {run.path.name}",
    }


# "FID: 23.4", "FID = 23.4", "| FID (10k) | 23.4 |", "**FID** 23.4": the number right after the label,
# skipping a parenthesised note such as the sample count.
_FID_RE = re.compile(r"\bFID\b[*_]*(?:\s*\([^)\n]*\))?[*_]*\s*(?:[:=|]\s*)?[*_]*(\d+(?:\.\d+)?)")


def _card(path: Path) -> dict[str, Any]:
    """Facts from a model card beside a generator file: ``<stem>.json`` / ``model-card.json`` (keys name,
    fid, fid_n, images_seen) or ``<stem>.md`` / ``model-card.md`` (the first 'FID ... <number>')."""
    for cand in (path.with_suffix(".json"), path.parent / "model-card.json", path.parent / "model_card.json"):
        if cand.is_file() and cand != path:
            try:
                d = json.loads(cand.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(d, dict):
                out = {k: d[k] for k in ("name", "fid", "fid_n", "images_seen") if k in d}
                if "fid" in out:
                    out["fid_source"] = cand.name
                return out
    for cand in (
        path.with_suffix(".md"),
        path.parent / "model-card.md",
        path.parent / "MODEL_CARD.md",
        path.parent / "README.md",
    ):
        if cand.is_file():
            try:
                m = _FID_RE.search(cand.read_text(errors="replace"))
            except OSError:
                continue
            if m:
                return {"fid": float(m.group(1)), "fid_source": cand.name}
    return {}


def describe_model(G: LoadedGenerator) -> dict[str, Any]:
    """What the page shows about the loaded model; missing facts are None."""
    path = Path(G.source)
    meta = dict(G.meta or {})
    run = RunDir.of_file(path)
    bundled = path.resolve() == bundled_model_path().resolve()
    name = meta.get("name") or (run.path.name if run else path.stem)
    info: dict[str, Any] = {
        "name": name,
        "source": path.name,  # a name, never a path of the server's machine
        "bundled": bundled,
        "resolution": G.resolution,
        "z_dim": G.z_dim,
        "step": meta.get("step"),
        "images_seen": meta.get("images_seen"),
        "ema": meta.get("ema"),
        "fid": meta.get("fid"),
        "fid_n": meta.get("fid_n"),
        "fid_step": None,
        "fid_source": "model metadata" if meta.get("fid") is not None else None,
    }
    card = _card(path)
    for k, v in card.items():
        if info.get(k) is None:
            info[k] = v
    if info["fid"] is None and run is not None:
        info.update(_fid_from_log(run, meta.get("step")) or {})
    try:
        info["params"] = sum(p.numel() for p in G.net.parameters())
    except Exception:  # pragma: no cover - any nn.Module has parameters()
        info["params"] = None
    info["limits"] = {
        "max_grid": MAX_GRID,
        "truncation": list(TRUNCATION_RANGE),
        "max_frames": MAX_FRAMES,
        "max_scale": MAX_SCALE,
        "max_side": MAX_SIDE,
        "seed_max": SEED_MAX,
    }
    return info
