"""Fréchet Inception Distance (Heusel et al. 2017), in float64.

FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

The trace of the matrix square root is computed without a general (non-symmetric) ``sqrtm``:
S1 S2 is similar to the symmetric PSD matrix A = S1^(1/2) S2 S1^(1/2), so tr((S1 S2)^(1/2)) is the
sum of the square roots of A's eigenvalues. Two symmetric eigendecompositions are stable even when the
covariances are singular (N < 2048), where scipy's ``sqrtm`` needs pytorch-fid's eps fallback.
"""

from __future__ import annotations

import warnings

import numpy as np

FEATURE_RANK_WARN = 2048


class SmallSampleWarning(UserWarning):
    """FID computed from fewer samples than feature dimensions (rank-deficient covariance)."""


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {f.shape}")
    mu = f.mean(axis=0)
    centered = f - mu
    sigma = centered.T @ centered / (len(f) - 1)
    return mu, sigma


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def fid_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """FID between two Gaussians given their means and covariances."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    # Symmetrise: round-off in a covariance product makes eigh see a slightly asymmetric matrix.
    s1 = (s1 + s1.T) / 2
    s2 = (s2 + s2.T) / 2
    root1 = _sqrt_psd(s1)
    inner = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    fid = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean
    # Tiny negative values are round-off of a zero distance.
    return float(max(fid, 0.0))


def warn_if_small(n: int, what: str = "FID") -> None:
    if n < FEATURE_RANK_WARN:
        warnings.warn(
            f"{what} from N={n} < {FEATURE_RANK_WARN} samples: the covariance is rank-deficient and FID is "
            f"biased upward; compare FIDs only at equal N, or use KID, which is unbiased at small N",
            SmallSampleWarning,
            stacklevel=3,
        )


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two feature sets (N1, D) and (N2, D); warns when min(N1, N2) < 2048."""
    warn_if_small(min(len(f1), len(f2)))
    return fid_from_stats(*feature_stats(f1), *feature_stats(f2))
