"""Nearest-neighbour distances in a feature space, the copy threshold, and the copy rate.

This is the audit's arithmetic, with no images and no networks, so training can call it on
features it already has (the cheap form, :class:`CheapAudit`):

    index = TrainIndex(train_features)                 # (M, D) features of the training faces
    threshold = calibrate(index.leave_one_out()[0], percentile=1.0)
    rate = copy_rate(fake_features, index, threshold)  # share of fakes closer than that to a training face

Distances are Euclidean. The search runs over chunks of queries and of the index (memory stays
bounded for 13.7k x 12,288-d pixel vectors), ranks by ``|q|^2 + |x|^2 - 2 q.x`` in float32 and then
recomputes each winner's distance exactly, so an exact copy measures 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]


def _vectors(rows: np.ndarray, transform: Transform | None) -> np.ndarray:
    rows = np.ascontiguousarray(rows)
    out = transform(rows) if transform is not None else rows
    return np.ascontiguousarray(out, dtype=np.float32)


def nearest(
    queries: np.ndarray,
    index: np.ndarray,
    *,
    transform: Transform | None = None,
    query_transform: Transform | None = None,
    exclude_same_row: bool = False,
    query_chunk: int = 1024,
    index_chunk: int = 2048,
    progress: Callable[[int], Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query row its nearest index row: (distances float64 (Q,), indices int64 (Q,)).

    ``transform`` turns raw rows (of ``queries`` and ``index``, e.g. uint8 pixels) into float vectors,
    chunk by chunk; ``query_transform`` (default: ``transform``) does it for the queries only, e.g.
    to mirror them. ``exclude_same_row``: query i is index row i and may not be its own neighbour
    (leave-one-out).
    """
    nq, m = len(queries), len(index)
    if m == 0 or (exclude_same_row and m < 2):
        raise ValueError(f"the index needs at least {2 if exclude_same_row else 1} rows, got {m}")
    if exclude_same_row and nq != m:
        raise ValueError("leave-one-out needs the queries to be the index itself")
    best_d = np.empty(nq, dtype=np.float64)
    best_i = np.empty(nq, dtype=np.int64)
    for q0 in range(0, nq, query_chunk):
        q = _vectors(queries[q0 : q0 + query_chunk], query_transform or transform)
        qn = (q * q).sum(1)
        cur_d = np.full(len(q), np.inf, dtype=np.float32)
        cur_i = np.zeros(len(q), dtype=np.int64)
        for x0 in range(0, m, index_chunk):
            x = _vectors(index[x0 : x0 + index_chunk], transform)
            d2 = qn[:, None] + (x * x).sum(1)[None, :] - 2.0 * (q @ x.T)
            if exclude_same_row:
                rows = np.arange(len(q))
                cols = q0 + rows - x0
                ok = (cols >= 0) & (cols < len(x))
                d2[rows[ok], cols[ok]] = np.inf
            j = d2.argmin(1)
            dj = d2[np.arange(len(q)), j]
            better = dj < cur_d
            cur_d[better], cur_i[better] = dj[better], x0 + j[better]
        # exact distances of the winners (the expansion above loses digits near 0)
        rows, inverse = np.unique(cur_i, return_inverse=True)
        diff = q.astype(np.float64) - _vectors(index[rows], transform)[inverse].astype(np.float64)
        best_d[q0 : q0 + len(q)] = np.sqrt((diff * diff).sum(1))
        best_i[q0 : q0 + len(q)] = cur_i
        if progress is not None:
            progress(len(q))
    return best_d, best_i


def calibrate(reference_distances: np.ndarray, percentile: float = 1.0) -> float:
    """The copy threshold: the ``percentile``-th percentile (numpy's linear rule) of real faces'
    nearest-training-face distances. A real face the model never saw is closer than this in
    ``percentile`` % of cases, so a model that makes new faces has a copy rate near ``percentile`` %."""
    d = np.asarray(reference_distances, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError("calibration needs at least one held-out distance")
    if not 0.0 < percentile < 100.0:
        raise ValueError(f"--percentile must be in (0, 100), got {percentile}")
    return float(np.percentile(d, percentile))


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


class TrainIndex:
    """Features of the training faces, searchable: ``nearest(features)`` -> (distances, rows)."""

    def __init__(self, features: np.ndarray):
        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 2 or len(f) == 0:
            raise ValueError(f"train features must be a non-empty (M, D) array, got shape {f.shape}")
        self.features = f

    def __len__(self) -> int:
        return len(self.features)

    def nearest(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(features, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.features.shape[1]:
            raise ValueError(f"features of shape {q.shape} do not match the index's dimension {self.features.shape[1]}")
        return nearest(q, self.features)

    def leave_one_out(self) -> tuple[np.ndarray, np.ndarray]:
        """Each training face's nearest *other* training face: the calibration when no face is held out."""
        return nearest(self.features, self.features, exclude_same_row=True)


def copy_rate(features_fake: np.ndarray, train_index: TrainIndex, threshold: float) -> float:
    """Share of generated faces whose nearest training face is closer than ``threshold``."""
    d, _ = train_index.nearest(features_fake)
    return float((d < threshold).mean())


class CheapAudit:
    """The audit's cheap form for training: features the evaluation already has, no extra network.

    Built once from the real (training) features the FID evaluation computed; the threshold is the
    ``percentile``-th percentile of their leave-one-out nearest distances (each real face to its
    nearest other real face). Each call takes the generated faces' features and returns a record to
    log next to FID: ``copy_rate``, ``copy_threshold``, ``nn_median`` (median nearest distance of the
    fakes) and ``real_nn_median`` (the same for real faces).

    The index is what the evaluation sampled (``eval.n`` of the M training faces), so a model that
    copies training faces at random shows a rate near ``eval.n / M`` of the full audit's: a trend to
    watch between evaluations, not the audit's number. Cost: one (n x n) distance matrix at
    construction and one per call, seconds for n = 10,000 next to minutes of Inception features.
    """

    def __init__(self, train_features: np.ndarray, percentile: float = 1.0):
        self.index = TrainIndex(train_features)
        self.percentile = float(percentile)
        ref, _ = self.index.leave_one_out()
        self.threshold = calibrate(ref, self.percentile)
        self.real_nn_median = float(np.median(ref))

    def __call__(self, fake_features: np.ndarray) -> dict[str, Any]:
        d, _ = self.index.nearest(fake_features)
        return {
            "copy_rate": float((d < self.threshold).mean()),
            "copy_threshold": self.threshold,
            "nn_median": float(np.median(d)),
            "real_nn_median": self.real_nn_median,
            "copy_protocol": f"nearest training face closer than the {self.percentile:g}th percentile of "
            f"real-to-other-real nearest distances (leave-one-out, {len(self.index)} real "
            f"faces, same features as FID)",
        }
