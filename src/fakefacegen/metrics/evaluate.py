"""Evaluate fake images against real ones: FID, KID, IS, precision/recall, each with its protocol.

Real features are cached on disk (see :mod:`.stats_cache`), so evaluating many generators against one
prepared dataset extracts the real images once.
"""

from __future__ import annotations

import inspect
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..atomic import atomic_write_text, remove_stale_temps
from . import stats_cache
from .features import LOGITS_UNAVAILABLE, FeatureExtractor
from .fid import FEATURE_RANK_WARN, feature_stats, fid_from_stats, warn_if_small
from .inception_score import inception_score
from .kid import kid_from_features
from .precision_recall import precision_recall
from .sources import Source, resolve_source

METRICS = ("fid", "kid", "is", "pr")
_ALIASES = {"precision_recall": "pr", "precision": "pr", "recall": "pr", "inception_score": "is"}


def _normalize_metrics(metrics: str | Sequence[str]) -> list[str]:
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    out: list[str] = []
    for m in names:
        key = _ALIASES.get(m.lower(), m.lower())
        if key not in METRICS:
            raise ValueError(f"unknown metric {m!r}; choose from {METRICS}")
        if key not in out:
            out.append(key)
    return out


def _real_features(
    source: Source,
    extractor: FeatureExtractor,
    *,
    cache: bool | str | os.PathLike,
    real_cache_key: str | None,
    progress: bool,
) -> tuple[np.ndarray, str]:
    """Features of the real set, from the cache when possible; returns (features, cache status)."""
    content = f"user:{real_cache_key}" if real_cache_key is not None else source.content_key
    if cache is False or content is None:
        return extractor(source.images, progress=progress), "off"
    root = None if cache is True else cache
    fields = {
        "content": content,
        "n": source.count,
        "selection": source.describe.get("selection"),
        "seed": source.describe.get("seed"),
        **extractor.protocol,
    }
    feats = stats_cache.load_features(fields, root, validate=source.validate)
    if feats is not None:
        return feats, "hit"
    feats = extractor(source.images, progress=progress)
    saved = stats_cache.save_features(fields, feats, root, check=source.check)
    return feats, ("miss" if saved else "miss (not writable)")


def _scores(
    real: np.ndarray,
    fake: np.ndarray,
    fake_logits: np.ndarray | None,
    metrics: list[str],
    *,
    real_stats: tuple[np.ndarray, np.ndarray] | None = None,
    kid_subsets: int,
    kid_subset_size: int,
    seed: int,
    pr_k: int,
    is_splits: int,
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Compute ``metrics``; returns (values, per-metric protocol, notes)."""
    values: dict[str, Any] = {}
    proto: dict[str, Any] = {}
    notes: list[str] = []
    if "fid" in metrics:
        n_min = min(len(real), len(fake))
        if n_min < FEATURE_RANK_WARN:
            warn_if_small(n_min)
            notes.append(f"FID with N={n_min} < {FEATURE_RANK_WARN} is biased upward; compare at equal N or use KID")
        mu_r, sig_r = real_stats if real_stats is not None else feature_stats(real)
        values["fid"] = fid_from_stats(mu_r, sig_r, *feature_stats(fake))
        proto["fid"] = {"dtype": "float64", "sqrtm": "eigh of sqrt(S1) S2 sqrt(S1)"}
    if "kid" in metrics:
        m = min(kid_subset_size, len(real), len(fake))
        values["kid"], values["kid_std"] = kid_from_features(real, fake, kid_subsets, kid_subset_size, seed)
        proto["kid"] = {
            "kernel": "(x.y/d + 1)^3",
            "estimator": "unbiased MMD^2",
            "subsets": kid_subsets,
            "subset_size": m,
            "seed": seed,
        }
    if "pr" in metrics:
        values["precision"], values["recall"] = precision_recall(real, fake, k=pr_k)
        proto["pr"] = {"method": "k-NN manifolds (Kynkaanniemi et al. 2019)", "k": pr_k}
    if "is" in metrics:
        if fake_logits is None:
            warnings.warn(f"Inception Score skipped: {LOGITS_UNAVAILABLE}", stacklevel=3)
            values["is"] = values["is_std"] = None
            notes.append(f"IS skipped: {LOGITS_UNAVAILABLE}")
        else:
            values["is"], values["is_std"] = inception_score(fake_logits, splits=is_splits)
            proto["is"] = {"splits": is_splits, "on": "fake images", "split": "consecutive"}
    return values, proto, notes


def _protocol(
    extractor: FeatureExtractor, real: Source, fake: Source, metric_proto: dict[str, Any], cache_status: str
) -> dict[str, Any]:
    return {
        "package": "fakefacegen",
        "version": __version__,
        "torch": torch.__version__,
        "n_real": real.count,
        "n_fake": fake.count,
        "resize": extractor.resize,
        "weights": extractor.protocol["weights"],
        "weights_hash": extractor.weights_hash,
        "precision": extractor.precision,
        "backend": extractor.backend,
        "device": str(extractor.device),
        "batch_size": extractor.batch_size,
        "label": f"n{real.count}v{fake.count}_{extractor.resize}",
        "real": real.describe,
        "fake": fake.describe,
        "real_features_cache": cache_status,
        "metrics": metric_proto,
    }


def evaluate_images(
    real: Any,
    fake: Any,
    metrics: str | Sequence[str] = ("fid", "kid"),
    *,
    n: int | None = None,
    real_cache_key: str | None = None,
    inception: str | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    resize: str = "pytorch-fid",
    progress: bool = True,
    seed: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    pr_k: int = 3,
    is_splits: int = 10,
    cache: bool | str | os.PathLike = True,
    model: torch.nn.Module | None = None,
    precision: str = "fp32",
    backend: str = "auto",
) -> dict[str, Any]:
    """Score ``fake`` images against ``real`` ones.

    ``real``/``fake``: a prepared dataset dir (``images.npy`` + ``manifest.json``), a folder of images,
    a uint8 (N, H, W, 3) array, or a callable ``sample(n, seed) -> uint8 (n, H, W, 3)``. ``n`` caps how
    many images are used from each (see :mod:`.sources` for the deterministic selection; a callable
    needs it). ``metrics``: any of "fid", "kid", "is", "pr". Real features are cached under
    ``$FAKEFACEGEN_CACHE/stats`` (``cache=False`` turns it off, a path moves it); ``real_cache_key``
    names a real set whose content cannot be hashed (e.g. a callable).

    Returns ``{"fid", "kid", "kid_std", "precision", "recall", "is", "is_std"}`` (those requested; IS is
    None with a note when the network has no logits), ``"n_real"``, ``"n_fake"``, ``"notes"`` and a
    ``"protocol"`` dict naming everything the numbers depend on.
    """
    names = _normalize_metrics(metrics)
    t0 = time.perf_counter()
    extractor = FeatureExtractor(
        model,
        inception=inception,
        device=device,
        batch_size=batch_size,
        resize=resize,
        precision=precision,
        backend=backend,
    )
    real_src = resolve_source(real, n, seed, role="real")
    real_feats, status = _real_features(
        real_src, extractor, cache=cache, real_cache_key=real_cache_key, progress=progress
    )
    fake_src = resolve_source(fake, n, seed, role="fake")
    fake_feats, fake_logits = extractor.extract(fake_src.images, progress=progress)
    values, metric_proto, notes = _scores(
        real_feats,
        fake_feats,
        fake_logits,
        names,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        seed=seed,
        pr_k=pr_k,
        is_splits=is_splits,
    )
    protocol = _protocol(extractor, real_src, fake_src, metric_proto, status)
    protocol["seconds"] = round(time.perf_counter() - t0, 2)
    return {**values, "n_real": real_src.count, "n_fake": fake_src.count, "notes": notes, "protocol": protocol}


def _call_sampler(sample_fn: Callable[..., Any]) -> Callable[[int, int], Any]:
    """Accept ``sample(n, seed)`` and also ``sample(n)`` (a sampler with its own fixed noise)."""
    try:
        params = [
            p
            for p in inspect.signature(sample_fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):
        return sample_fn
    if len(params) == 1 and params[0].kind != params[0].VAR_POSITIONAL:
        return lambda k, s: sample_fn(k)
    return sample_fn


class TrainingEvaluator:
    """FID/KID of a generator during training, against real features computed once.

    Args:
        dataset_dir: prepared dataset (or any real source accepted by :func:`evaluate_images`).
        n: images drawn from the dataset and from the generator at each call.
        metric: "fid", "kid", or a sequence of metric names.
        inception: weights path (None: env/cache/download, see :func:`load_inception`).
        device: where the Inception runs.
        audit: add the memorisation audit's cheap form (``copy_rate``, ``copy_threshold``, ``nn_median``,
            ``real_nn_median``, ``copy_protocol``; see ``audit.neighbours.CheapAudit``) to each result.
    """

    def __init__(
        self,
        dataset_dir: Any,
        n: int,
        metric: str | Sequence[str] = "fid",
        inception: str | None = None,
        device: str | torch.device = "cpu",
        *,
        batch_size: int = 32,
        resize: str = "pytorch-fid",
        seed: int = 0,
        cache: bool | str | os.PathLike = True,
        model: torch.nn.Module | None = None,
        progress: bool = False,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        precision: str = "fp32",
        backend: str = "auto",
        audit: bool = False,
    ):
        self.metrics = _normalize_metrics(metric)
        self.n = int(n)
        self.seed = seed
        self.progress = progress
        self.kid = (kid_subsets, kid_subset_size)
        self.extractor = FeatureExtractor(
            model,
            inception=inception,
            device=device,
            batch_size=batch_size,
            resize=resize,
            precision=precision,
            backend=backend,
        )
        self.real_source = resolve_source(dataset_dir, self.n, seed, role="real")
        self.real_features, self.cache_status = _real_features(
            self.real_source, self.extractor, cache=cache, real_cache_key=None, progress=progress
        )
        # FID's real mean/covariance once, not at every call.
        self.real_stats = feature_stats(self.real_features) if "fid" in self.metrics else None
        self.audit = None
        if audit:  # the audit's cheap form: nearest evaluated training faces in these same features
            from ..audit.neighbours import CheapAudit

            self.audit = CheapAudit(self.real_features)

    def __call__(self, sample_fn: Callable[..., Any]) -> dict[str, Any]:
        """Sample ``n`` images with ``sample_fn(n, seed)`` (or ``sample_fn(n)``) and score them."""
        fake_src = resolve_source(_call_sampler(sample_fn), self.n, self.seed, role="fake")
        fake_feats, fake_logits = self.extractor.extract(fake_src.images, progress=self.progress)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the small-N note is in the result; don't warn every eval
            values, metric_proto, notes = _scores(
                self.real_features,
                fake_feats,
                fake_logits,
                self.metrics,
                real_stats=self.real_stats,
                kid_subsets=self.kid[0],
                kid_subset_size=self.kid[1],
                seed=self.seed,
                pr_k=3,
                is_splits=10,
            )
        protocol = _protocol(self.extractor, self.real_source, fake_src, metric_proto, self.cache_status)
        copies = self.audit(fake_feats) if self.audit is not None else {}
        return {**values, **copies, "n": self.n, "notes": notes, "protocol": protocol}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_metrics_json(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write an evaluation result (numbers with their protocol) as indented JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, name=path.name)  # of a write of this file that was killed
    return atomic_write_text(path, json.dumps(_jsonable(result), indent=2, sort_keys=False) + "\n")
