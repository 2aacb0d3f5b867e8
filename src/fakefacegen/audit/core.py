"""Run the memorisation audit: generated faces vs the training faces, calibrated with real faces.

For each feature space (:mod:`.spaces`) every generated face gets its nearest training face. The
same search for real faces that are not in the training index gives the calibration: the copy
threshold is the ``percentile``-th percentile of those real-to-train distances, and the copy rate is
the share of generated faces closer than that to a training face. A model that makes new faces has
a copy rate near ``percentile`` %; one that reproduces training faces has a rate far above it.

Where the real reference faces come from (``calibration`` in the summary):

``holdout``
    ``holdout=DATASET``: a second prepared dataset of faces the model never saw; the index is all
    of ``data``.
``split``
    ``holdout_fraction=F``: a seeded random share F of ``data`` is held out and the index is the
    rest. Right for a model trained on the rest only; for a model trained on all of ``data`` it misses
    copies of the held-out faces.
``leave-one-out`` (default)
    The index is all of ``data`` (what ``fakefacegen train --data`` trains on) and each training face
    is measured to its nearest *other* training face: a real face that is not in the index, with one
    face fewer in the index than the generated faces meet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..dataset_format import DatasetFormatError, open_dataset
from .neighbours import calibrate, nearest, wilson_interval
from .spaces import DEFAULT_SPACES, make_space, parse_spaces

Sampler = Callable[..., np.ndarray]  # sample(n, seed[, start=...]) -> uint8 (n, S, S, 3)


def _load(path: str | Path, flag: str) -> tuple[dict[str, Any], np.ndarray]:
    p = Path(path)
    if not p.exists():
        raise DatasetFormatError(f"{flag} {p}: no such directory (a dataset made by `fakefacegen prepare`)")
    if not p.is_dir():
        raise DatasetFormatError(f"{flag} {p}: not a directory (a dataset made by `fakefacegen prepare`)")
    manifest, images = open_dataset(p)
    if len(images) < 2:
        raise DatasetFormatError(f"{flag} {p}: needs at least 2 faces, holds {len(images)}")
    return manifest, images


def _check_args(n: int, percentile: float, holdout: Any, holdout_fraction: float | None, pairs: int) -> None:
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    if not 0.0 < percentile < 100.0:
        raise ValueError(f"--percentile must be in (0, 100), got {percentile}")
    if holdout is not None and holdout_fraction is not None:
        raise ValueError("give either --holdout DATASET or --holdout-fraction F, not both")
    if holdout_fraction is not None and not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"--holdout-fraction must be in (0, 1), got {holdout_fraction}")
    if pairs < 0:
        raise ValueError(f"--pairs must be >= 0, got {pairs}")


def split_rows(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows), each sorted: a ``seed``-ed permutation, the first share held out."""
    n_held = int(round(count * fraction))
    if n_held < 1 or n_held > count - 1:
        raise ValueError(f"--holdout-fraction {fraction} of {count} faces leaves no held-out or no training face")
    perm = np.random.default_rng(seed).permutation(count)
    return np.sort(perm[n_held:]), np.sort(perm[:n_held])


def sample_faces(
    sample: Sampler, n: int, seed: int, batch: int = 500, progress: Callable[[int], Any] | None = None
) -> np.ndarray:
    """``n`` generated faces as uint8 (n, S, S, 3): ``sample(k, seed, start=...)`` in batches when the
    sampler takes ``start`` (a LoadedGenerator), else one call ``sample(n, seed)``."""
    try:
        parts = []
        for s in range(0, n, batch):
            parts.append(np.asarray(sample(min(batch, n - s), seed, start=s)))
            if progress is not None:
                progress(len(parts[-1]))
        out = np.concatenate(parts)
    except TypeError:
        out = np.asarray(sample(n, seed))
    if out.dtype != np.uint8 or out.ndim != 4 or out.shape[-1] != 3 or len(out) != n:
        raise ValueError(f"the model returned {out.dtype} {out.shape}; expected uint8 ({n}, S, S, 3) faces")
    return out


class _Embeddings:
    """Features of a dataset's faces in one space, computed once per (content, space) and cached.

    The features are stored every :data:`CHUNK` faces while they are computed (an hour for 13.7k
    faces in the identity space on a 2-core CPU), so an interrupted audit resumes where it stopped.
    """

    CHUNK = 500

    def __init__(self, space: Any, cache: bool, bar: Callable[[str, int], Callable[[int], Any] | None]):
        self.space, self.cache, self.bar = space, cache, bar

    def of_dataset(self, manifest: dict[str, Any], images: np.ndarray, label: str) -> np.ndarray:
        if self.space.lazy:
            return images
        from ..metrics.stats_cache import load_features, save_features

        fields = {
            "kind": "audit-embeddings",
            "content_hash": manifest.get("content_hash"),
            "count": len(images),
            "protocol": self.space.protocol,
        }
        partial_fields = {**fields, "kind": "audit-embeddings-partial"}
        cache = self.cache and bool(manifest.get("content_hash"))
        done = np.empty((0, 0), dtype=np.float32)
        if cache:
            hit = load_features(fields)
            if hit is not None and len(hit) == len(images):
                return hit.astype(np.float32)
            part = load_features(partial_fields)
            if part is not None and len(part) < len(images):
                done = part.astype(np.float32)
        tick = self.bar(f"{self.space.name} features of {label}", len(images))
        if tick is not None and len(done):
            tick(len(done))
        parts = [done] if len(done) else []
        for start in range(len(done), len(images), self.CHUNK):
            parts.append(self.space.embed(images[start : start + self.CHUNK], tick))
            if cache and start + self.CHUNK < len(images):
                save_features(partial_fields, np.concatenate(parts))
        feats = np.concatenate(parts)
        if cache:
            save_features(fields, feats)
        return feats

    def of_images(self, images: np.ndarray, label: str) -> np.ndarray:
        return (
            images
            if self.space.lazy
            else self.space.embed(images, self.bar(f"{self.space.name} features of {label}", len(images)))
        )


def _search(
    space: Any,
    queries: np.ndarray,
    index: np.ndarray,
    *,
    loo: bool = False,
    progress: Callable[[int], Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distances, index rows, mirrored flags) of each query's nearest training face."""
    if not space.lazy:
        d, i = nearest(queries, index, exclude_same_row=loo, progress=progress)
        return d, i, np.zeros(len(d), dtype=bool)
    d, i = nearest(queries, index, transform=space.transform, exclude_same_row=loo, progress=progress)
    if not space.mirror:
        return d, i, np.zeros(len(d), dtype=bool)

    # |flip(q) - x| = |q - flip(x)|: mirroring the query compares it with every mirrored training
    # face; in leave-one-out a face's own mirror image is excluded with the face itself.
    dm, im = nearest(
        queries,
        index,
        transform=space.transform,
        exclude_same_row=loo,
        query_transform=lambda rows: space.transform(rows, mirrored=True),
    )
    flip = dm < d
    return np.where(flip, dm, d), np.where(flip, im, i), flip


def _quantiles(d: np.ndarray) -> dict[str, float]:
    return {f"p{q:g}": float(np.percentile(d, q)) for q in (0.1, 1, 5, 25, 50, 75, 95)} | {
        "min": float(d.min()),
        "mean": float(d.mean()),
        "max": float(d.max()),
    }


def audit(
    sample: Sampler,
    data: str | Path,
    *,
    n: int = 10_000,
    seed: int = 0,
    holdout: str | Path | None = None,
    holdout_fraction: float | None = None,
    split_seed: int = 0,
    spaces: Any = DEFAULT_SPACES,
    percentile: float = 1.0,
    pairs: int = 12,
    cache: bool = True,
    inception: str | None = None,
    device: str = "cpu",
    progress: bool = False,
    model_name: str = "model",
) -> dict[str, Any]:
    """The audit's numbers (see the module docstring); :func:`fakefacegen.audit.audit_to_dir` also
    writes them. ``sample(n, seed)`` returns uint8 (n, S, S, 3) faces (a ``LoadedGenerator`` does)."""
    _check_args(n, percentile, holdout, holdout_fraction, pairs)
    names = parse_spaces(spaces)
    manifest, images = _load(data, "--data")
    started = time.perf_counter()
    if holdout is not None:
        h_manifest, h_images = _load(holdout, "--holdout")
        if h_images.shape[1:] != images.shape[1:]:
            raise ValueError(
                f"--holdout {holdout}: faces are {h_images.shape[1]} px, --data {data} has {images.shape[1]} px"
            )
        calibration = "holdout"
        train_rows, held_rows = np.arange(len(images)), None
    elif holdout_fraction is not None:
        calibration = "split"
        train_rows, held_rows = split_rows(len(images), holdout_fraction, split_seed)
    else:
        calibration = "leave-one-out"
        train_rows, held_rows = np.arange(len(images)), None

    bar = _progress_factory(progress)
    spaces_obj = [make_space(s, inception=inception, device=device) for s in names]  # fail before sampling
    t0 = time.perf_counter()
    fakes = sample_faces(sample, n, seed, progress=bar("generate", n))
    t_generate = time.perf_counter() - t0
    if fakes.shape[1:] != images.shape[1:]:
        raise ValueError(
            f"the model makes {fakes.shape[1]} px faces but --data {data} holds {images.shape[1]} px faces"
        )

    result: dict[str, Any] = {
        "model": model_name,
        "data": str(data),
        "data_content_hash": manifest.get("content_hash"),
        "n_generated": n,
        "seed": seed,
        "n_train_index": int(len(train_rows)),
        "calibration": calibration,
        "split_seed": split_seed if calibration == "split" else None,
        "holdout_fraction": holdout_fraction,
        "holdout": str(holdout) if holdout is not None else None,
        "percentile": percentile,
        "spaces": {},
        "timings_s": {"generate": t_generate},
    }
    for space in spaces_obj:
        t0 = time.perf_counter()
        emb = _Embeddings(space, cache, bar)
        all_feats = emb.of_dataset(manifest, images, "--data")
        index = all_feats if calibration != "split" else all_feats[train_rows]
        if calibration == "holdout":
            ref, loo = emb.of_dataset(h_manifest, h_images, "--holdout"), False
        elif calibration == "split":
            ref, loo = all_feats[held_rows], False
        else:
            ref, loo = index, True
        fake_feats = emb.of_images(fakes, "generated faces")
        t_feats = time.perf_counter() - t0
        t0 = time.perf_counter()
        d_ref, i_ref, f_ref = _search(space, ref, index, loo=loo, progress=bar(f"{space.name} search, real", len(ref)))
        d_fake, i_fake, f_fake = _search(space, fake_feats, index, progress=bar(f"{space.name} search, generated", n))
        t_search = time.perf_counter() - t0
        threshold = calibrate(d_ref, percentile)
        k = int((d_fake < threshold).sum())
        order = np.argsort(d_fake, kind="stable")[:pairs]
        ref_order = np.argsort(d_ref, kind="stable")[: min(pairs, 6)]
        rows_ref = held_rows if held_rows is not None else np.arange(len(ref))
        result["spaces"][space.name] = {
            "protocol": space.protocol,
            "threshold": threshold,
            "copy_rate": k / n,
            "copies": k,
            "copy_rate_ci95": list(wilson_interval(k, n)),
            "expected_rate_if_no_copies": percentile / 100.0,
            "n_reference": int(len(ref)),
            "generated_to_train": _quantiles(d_fake),
            "reference_to_train": _quantiles(d_ref),
            "closest_pairs": [
                {
                    "generated": int(g),
                    "train_row": int(train_rows[i_fake[g]]),
                    "mirrored": bool(f_fake[g]),
                    "distance": float(d_fake[g]),
                    "ratio_to_threshold": float(d_fake[g] / threshold) if threshold > 0 else None,
                }
                for g in order
            ],
            "closest_reference_pairs": [
                {
                    "reference_row": int(rows_ref[r]),
                    "train_row": int(train_rows[i_ref[r]]),
                    "mirrored": bool(f_ref[r]),
                    "distance": float(d_ref[r]),
                }
                for r in ref_order
            ],
            "timings_s": {"features": t_feats, "search": t_search},
        }
        if space.name == "identity":
            from .identity import SAME_PERSON

            result["spaces"][space.name]["share_below_same_person_0.6"] = {
                "generated": float((d_fake < SAME_PERSON).mean()),
                "reference": float((d_ref < SAME_PERSON).mean()),
            }
        result["_distances"] = result.get("_distances", {}) | {space.name: (d_fake, d_ref)}
    result["timings_s"]["total"] = time.perf_counter() - started
    result["_fakes"], result["_images"] = fakes, images
    result["_reference_images"] = h_images if calibration == "holdout" else images
    return result


def _progress_factory(enabled: bool) -> Callable[[str, int], Callable[[int], Any] | None]:
    def make(desc: str, total: int) -> Callable[[int], Any] | None:
        if not enabled:
            return None
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit="face", leave=False)

        def update(k: int) -> None:
            bar.update(k)
            if bar.n >= total:
                bar.close()

        return update

    return make
