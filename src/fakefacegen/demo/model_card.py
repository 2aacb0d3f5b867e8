"""What the page shows about the loaded model: name, resolution, images seen and FID, from the
generator's metadata, a model card beside it (JSON or markdown), or the run's log.jsonl; and the
attributes it can edit, from its directions file (:func:`describe_editing`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..directions import REQUIRED, Directions, DirectionsError, directions_path
from ..generate import LoadedGenerator, bundled_model_path
from ..rundir import RunDir, read_log
from .params import (
    EDIT_AMOUNT_MAX,
    EDIT_MAX_ATTRS,
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


# --------------------------------------------------------------------------------------------
# attribute editing

HEADLINE = REQUIRED  # the attributes the page lists first (Smiling, Young, Male, ...), in this order
SLIDER_RANGE = 3.0  # a slider's recommended range: -3..+3 sigmas (docs/editing.md's strips) ...
SLIDER_RANGE_FAR = 4.0  # ... widened to 4 on a side where an edit of 2 carried fewer than half the faces across
SLIDER_STEP = 0.1


def load_directions(G: LoadedGenerator, path: str | Path | None = None) -> tuple[Directions | None, str]:
    """(the model's attribute directions, "") from ``path`` or its ``NAME-directions.json``, or (None, why
    not) when there are none or they do not fit; the reason names files by name, never by path."""
    p = Path(path) if path is not None else directions_path(G.source)
    try:
        return G.directions(p), ""
    except DirectionsError as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable directions"
        for full in sorted({str(p), str(p.resolve()), str(G.source), str(Path(G.source).resolve())}, key=len)[::-1]:
            msg = msg.replace(full, Path(full).name)
        return None, msg


def recommended_range(entry: dict[str, Any]) -> list[float]:
    """A slider's range for one attribute's file entry: -3..+3, widened to 4 on each side where the
    measured edit of 2 (``measured.cross_up`` / ``cross_down``) carried fewer than half the eligible
    generated faces across 0.5 (attributes the model rarely draws, e.g. Eyeglasses, Bald)."""
    m = entry.get("measured")
    m = m if isinstance(m, dict) else {}

    def far(key: str) -> bool:
        v = m.get(key)
        return isinstance(v, (int, float)) and v < 0.5

    lo = SLIDER_RANGE_FAR if far("cross_down") else SLIDER_RANGE
    hi = SLIDER_RANGE_FAR if far("cross_up") else SLIDER_RANGE
    return [-lo, hi]


def describe_editing(dirs: Directions | None, why_not: str = "") -> dict[str, Any]:
    """What ``/api/attributes`` answers: the offered attributes (the headline ones first, then the rest by
    name), each with the classifier's held-out accuracy, balanced accuracy and AUC and a recommended
    slider range, and the limits of an edit; without directions, no attributes and why not."""
    limits = {"amount_max": EDIT_AMOUNT_MAX, "max_attrs": EDIT_MAX_ATTRS, "step": SLIDER_STEP}
    if dirs is None:
        return {"available": False, "why_not": why_not, "attributes": [], "limits": limits}
    per = dirs.info.get("attributes") or {}
    order = [a for a in HEADLINE if a in dirs.attributes] + sorted(a for a in dirs.attributes if a not in HEADLINE)
    attrs = []
    for a in order:
        entry = per.get(a)
        entry = entry if isinstance(entry, dict) else {}
        clf = entry.get("classifier")
        clf = clf if isinstance(clf, dict) else {}

        def num(key: str, d: dict[str, Any] = clf) -> float | None:
            v = d.get(key)
            return float(v) if isinstance(v, (int, float)) else None

        attrs.append(
            {
                "name": a,
                "label": a.replace("_", " "),
                "headline": a in HEADLINE,
                "accuracy": num("accuracy"),
                "balanced_accuracy": num("balanced_accuracy"),
                "auc": num("auc"),
                "generated_share": num("generated_share", entry),
                "range": recommended_range(entry),
            }
        )
    return {
        "available": True,
        "space": dirs.space,
        "attributes": attrs,
        "not_offered": dict(dirs.info.get("not_offered") or {}),
        "limits": limits,
        "unit": "standard deviations of the generated latents along the direction (sigmas)",
    }
