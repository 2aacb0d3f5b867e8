"""On-disk cache of real-image features, keyed by content and protocol.

An entry is ``<root>/stats/<key>.npy`` (features, float32: the network computes in float32, so this is
lossless) plus ``<key>.json`` (the key fields and validation data). The key is a sha256 over the
content identity (a dataset's manifest ``content_hash``, or a hash of the selected pixels/files), the
number of images and selection, the resize mode, the weights hash and the precision: change any of
them, or the data, and the entry no longer matches. FID's mean/covariance are recomputed from the
features on load (a fraction of a second), so one entry serves FID, KID and precision/recall.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write, atomic_write_text, remove_stale_temps
from .inception import cache_root

CACHE_FORMAT = 1


def stats_dir(root: str | os.PathLike | None = None) -> Path:
    return (Path(root).expanduser() if root is not None else cache_root()) / "stats"


def cache_key(fields: dict[str, Any]) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def load_features(
    fields: dict[str, Any],
    root: str | os.PathLike | None = None,
    validate: Callable[[dict[str, Any]], bool] | None = None,
) -> np.ndarray | None:
    """Cached features (float64) for ``fields``, or None if absent, unreadable or invalid."""
    d = stats_dir(root)
    key = cache_key(fields)
    meta_path, feat_path = d / f"{key}.json", d / f"{key}.npy"
    try:
        meta = json.loads(meta_path.read_text())
        feats = np.load(feat_path)
    except (OSError, ValueError):
        return None
    if meta.get("fields") != json.loads(json.dumps(fields, default=str)):
        return None
    if validate is not None and not validate(meta.get("check", {})):
        return None
    return feats.astype(np.float64)


def save_features(
    fields: dict[str, Any],
    features: np.ndarray,
    root: str | os.PathLike | None = None,
    check: dict[str, Any] | None = None,
) -> Path | None:
    """Store features; returns the .npy path, or None if the cache is not writable."""
    d = stats_dir(root)
    key = cache_key(fields)
    check = {k: (v() if callable(v) else v) for k, v in (check or {}).items()}
    try:
        d.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(d)  # of a save that was killed (each file is whole or absent: see load_features)
        atomic_write(d / f"{key}.npy", lambda f: np.save(f, features.astype(np.float32)))
        meta = {"fields": fields, "check": check, "shape": list(features.shape)}
        atomic_write_text(d / f"{key}.json", json.dumps(meta, indent=1, default=str))
    except OSError:
        return None
    return d / f"{key}.npy"
