"""Improved precision and recall (Kynkäänniemi et al. 2019), the k-NN manifold estimator.

Each set's manifold is the union of balls around its points, each ball's radius being the distance to
the point's k-th nearest neighbour within its own set (the point itself excluded). Precision is the
fraction of fake points inside the real manifold (fidelity); recall the fraction of real points inside
the fake manifold (coverage). A point on a ball's boundary counts as inside.
"""

from __future__ import annotations

import numpy as np

_BLOCK = 1024  # rows per block of pairwise distances


def _sq_dists(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    d = (a * a).sum(axis=1)[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def knn_radii(feats: np.ndarray, k: int = 3) -> np.ndarray:
    """Squared distance of each row to its k-th nearest other row, (N,)."""
    n = len(feats)
    if n <= k:
        raise ValueError(f"need more than k={k} points, got {n}")
    sq = (feats * feats).sum(axis=1)
    radii = np.empty(n)
    for s in range(0, n, _BLOCK):
        d = _sq_dists(feats[s : s + _BLOCK], feats, sq)
        d[np.arange(len(d)), np.arange(s, s + len(d))] = np.inf  # exclude the point itself
        radii[s : s + _BLOCK] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return radii


def _coverage(manifold: np.ndarray, radii: np.ndarray, queries: np.ndarray) -> float:
    sq = (manifold * manifold).sum(axis=1)
    inside = 0
    for s in range(0, len(queries), _BLOCK):
        d = _sq_dists(queries[s : s + _BLOCK], manifold, sq)
        inside += int((d <= radii[None, :]).any(axis=1).sum())
    return inside / len(queries)


def precision_recall(real_feats: np.ndarray, fake_feats: np.ndarray, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of fake features against real features with k-NN radii (float64)."""
    real = np.asarray(real_feats, dtype=np.float64)
    fake = np.asarray(fake_feats, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need (N, D) features with equal D, got {real.shape} and {fake.shape}")
    precision = _coverage(real, knn_radii(real, k), fake)
    recall = _coverage(fake, knn_radii(fake, k), real)
    return precision, recall
