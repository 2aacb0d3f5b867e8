"""Attribute directions in a generator's latent space, InterFaceGAN-style (Shen et al., CVPR 2020).

``find_directions(G, classifier)`` generates ``n`` faces, scores them with the attribute classifier
(:mod:`fakefacegen.attributes`) and fits, per attribute, a linear boundary in the *edit space*: W (the
mapping network's output) for the style family, z for the DCGAN, which has nothing else. The boundary's
unit normal is the attribute's direction; an edit of ``a`` moves a latent by ``a`` standard deviations of
the generated latents along it (``sigma``), so amounts mean the same in z and in W.

Fitting (``method``): ``logistic`` (default) is class-balanced logistic regression on the
0.5-thresholded scores (InterFaceGAN fits a linear SVM, a close relative); ``regression`` is ridge least
squares of the classifier's logit on the latent. On the bundled model logistic edits carry more faces
across 0.5 (30 attributes at +2: 50.6% vs 48.3%) and place the boundary where the classifier does
(balanced accuracy on held-out faces 0.86 vs 0.62), for 0.003 more entanglement; docs/editing.md.

Conditional editing (:meth:`Directions.vector`): the edit is the shortest latent step that moves each
edited attribute's linear score by its amount and each kept attribute's by 0, ``v = A^T (A A^T)^-1 b``
with A the rows of the normals involved; for one attribute and nothing kept that is ``a * sigma * n``,
and with one kept attribute it is InterFaceGAN's ``n1 - (n1.n2) n2`` direction, scaled so that the
edited attribute still moves by ``a``.

Attributes the classifier cannot tell apart (held-out ROC AUC below :data:`MIN_AUC`) and attributes
without a linear direction in the edit space (on held-out generated faces the projection correlates
less than :data:`MIN_CORRELATION` with the classifier's logit) are not offered; the file says why.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from .attributes import AttributeClassifier
    from .generate import LoadedGenerator

FORMAT = "fakefacegen-directions"
FORMAT_VERSION = 1
MIN_AUC = 0.85  # the classifier's held-out ROC AUC an offered attribute needs
MIN_CORRELATION = 0.3  # the direction's correlation with the classifier's logit on held-out generated faces
# (a direction fitted to noise scores has about 0; on the bundled model the lowest real attribute has 0.50)
MIN_SIDE = 20  # a logistic fit needs this many generated faces on each side of 0.5
FIT_SEED = 1_000_003  # the seed of the generated faces the boundaries are fitted on
MEASURE_SEED = 1_000_033  # the seed of the held-out generated faces the edits are measured on
MAX_GRAM_CONDITION = 20.0  # edited + kept directions nearly parallel beyond this (two at |cosine| > 0.9): refused,
# as the step would be over 2.2 times as long as the edit alone and leave the region of latents G was trained on
REQUIRED = (
    "Smiling",
    "Young",
    "Male",
    "Eyeglasses",
    "Blond_Hair",
    "Black_Hair",
    "Bald",
    "Heavy_Makeup",
    "Mouth_Slightly_Open",
)


class DirectionsError(ValueError):
    """A directions file, attribute name or edit that cannot be used (one-line message)."""


def weights_hash(G: LoadedGenerator) -> str:
    """sha1 of the generator's state dict (names and float32 values): which weights directions belong to."""
    h = hashlib.sha1()
    for k, v in G.net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def directions_path(model_source: str | Path) -> Path:
    """Where a model's directions live by default: ``NAME-directions.json`` next to its file
    (the bundled ``assets/celeba64.safetensors`` -> ``assets/celeba64-directions.json``)."""
    p = Path(model_source)
    return p.with_name(f"{p.stem}-directions.json")


# --------------------------------------------------------------------------------------------
# the directions of one model, and conditional edit vectors


@dataclass
class Directions:
    """The offered attributes' unit normals (K, D) in ``space`` ('z' or 'w'), their ``sigmas`` and
    ``offsets`` (the boundary is n.x + offset = 0), and ``info`` (how they were found and measured)."""

    space: str
    attributes: list[str]
    normals: np.ndarray
    sigmas: np.ndarray
    offsets: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    _cache: dict[tuple, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def dim(self) -> int:
        return int(self.normals.shape[1])

    def _row(self, name: str, flag: str) -> int:
        if name not in self.attributes:
            why = (self.info.get("not_offered") or {}).get(name)
            if why:
                raise DirectionsError(f"{flag} {name}: not offered for this model ({why})")
            raise DirectionsError(f"{flag} {name}: unknown attribute; offered: {', '.join(self.attributes)}")
        return self.attributes.index(name)

    def vector(self, attrs: Mapping[str, float], keep: Sequence[str] = ()) -> np.ndarray:
        """float32 (D,): the latent step that moves each attribute of ``attrs`` by its amount (in sigmas;
        0 = not edited) and each attribute of ``keep`` by 0, as short as possible."""
        edits = {k: float(v) for k, v in attrs.items() if float(v) != 0.0}
        for k, v in attrs.items():
            self._row(k, "--attr")
            if not np.isfinite(float(v)):
                raise DirectionsError(f"--attr {k}: the amount must be a finite number, got {v}")
        for k in keep:
            self._row(k, "--keep")
            if k in attrs:
                raise DirectionsError(f"--keep {k}: it is also edited with --attr; give it once")
        key = (tuple(sorted(edits.items())), tuple(sorted(set(keep))))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if not edits:
            return np.zeros(self.dim, np.float32)
        names = list(edits) + [k for k in dict.fromkeys(keep)]
        rows = np.array([self.attributes.index(n) for n in names])
        A = self.normals[rows].astype(np.float64)
        b = np.array(
            [edits[n] * self.sigmas[self.attributes.index(n)] for n in edits] + [0.0] * (len(names) - len(edits))
        )
        gram = A @ A.T
        if np.linalg.cond(gram) > MAX_GRAM_CONDITION:
            cos = np.abs(gram - np.eye(len(names)))
            i, j = np.unravel_index(np.argmax(cos), cos.shape)
            raise DirectionsError(
                f"cannot edit and keep {', '.join(names)} at once: the directions of {names[i]} and {names[j]} "
                f"are nearly parallel (cosine {gram[i, j]:.2f}); drop one of them"
            )
        v = (A.T @ np.linalg.solve(gram, b)).astype(np.float32)
        if len(self._cache) < 4096:
            self._cache[key] = v
        return v

    def scores(self, codes: np.ndarray) -> np.ndarray:
        """(N, K): each code's signed distance to each boundary, in sigmas."""
        return (np.asarray(codes, np.float64) @ self.normals.T.astype(np.float64) + self.offsets) / self.sigmas

    # ----- the file

    def to_json(self) -> dict[str, Any]:
        per = {
            a: {
                "normal": [float(f"{x:.6g}") for x in self.normals[i]],
                "sigma": float(f"{self.sigmas[i]:.6g}"),
                "offset": float(f"{self.offsets[i]:.6g}"),
                **(self.info.get("attributes", {}).get(a) or {}),
            }
            for i, a in enumerate(self.attributes)
        }
        rest = {k: v for k, v in self.info.items() if k != "attributes"}
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "space": self.space,
            "dim": self.dim,
            **rest,
            "attributes": per,
        }

    def save(self, path: str | Path) -> None:
        from .atomic import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Directions:
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise DirectionsError(
                f"{p}: no directions file for this model; make one with `fakefacegen directions MODEL --out {p}`"
            ) from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise DirectionsError(f"{p}: not a readable directions file ({str(e).splitlines()[0][:120]})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise DirectionsError(f"{p}: not a FakeFaceGen directions file (no '{FORMAT}' format field)")
        version = d.get("format_version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise DirectionsError(f"{p}: format_version must be an integer, got {str(version)[:40]!r}")
        if version > FORMAT_VERSION:
            raise DirectionsError(f"{p}: directions format {version} is newer than this FakeFaceGen reads")
        for key in ("model", "not_offered"):
            if not isinstance(d.get(key) or {}, dict):
                raise DirectionsError(f"{p}: '{key}' must be a mapping, got {type(d[key]).__name__}")
        try:
            per = d["attributes"]
            names = list(per)
            normals = np.array([per[a]["normal"] for a in names], np.float32).reshape(len(names), int(d["dim"]))
            sigmas = np.array([per[a]["sigma"] for a in names], np.float64)
            offsets = np.array([per[a]["offset"] for a in names], np.float64)
        except (KeyError, TypeError, ValueError):
            raise DirectionsError(f"{p}: a directions file with missing or malformed attribute entries") from None
        if not (np.isfinite(normals).all() and np.isfinite(sigmas).all() and (sigmas > 0).all()):
            raise DirectionsError(f"{p}: a direction has NaN/Inf values or a sigma <= 0")
        info = {k: v for k, v in d.items() if k not in ("format", "format_version", "space", "dim")}
        info["attributes"] = {
            a: {k: v for k, v in per[a].items() if k not in ("normal", "sigma", "offset")} for a in names
        }
        return cls(str(d.get("space")), names, normals, sigmas, offsets, info)


# --------------------------------------------------------------------------------------------
# fitting


def fit_normal(
    codes: np.ndarray, target: np.ndarray, method: str = "logistic", l2: float = 1e-2
) -> tuple[np.ndarray, float]:
    """(unit normal (D,), offset) of a linear boundary n.x + offset = 0 between the codes (N, D).

    ``regression``: ridge least squares of ``target`` (the classifier's logit) on the codes, the
    offset placing the boundary at logit 0. ``logistic``: class-balanced logistic regression on
    ``target > 0`` (L-BFGS, ridge ``l2``). Codes are standardised per dimension for the fit."""
    x = torch.as_tensor(np.asarray(codes, np.float64))
    t = torch.as_tensor(np.asarray(target, np.float64))
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-8)
    xs = (x - mu) / sd
    n, dim = xs.shape
    if method == "regression":
        tc = t - t.mean()
        beta = torch.linalg.solve(xs.T @ xs + l2 * n * torch.eye(dim, dtype=x.dtype), xs.T @ tc)
        bias = t.mean()
    elif method == "logistic":
        y = (t > 0).double()
        pos = float(y.mean())
        if pos in (0.0, 1.0):
            raise DirectionsError("logistic fit: the generated faces are all on one side")
        wts = torch.where(y > 0, 0.5 / pos, 0.5 / (1 - pos))
        beta = torch.zeros(dim, dtype=x.dtype, requires_grad=True)
        b0 = torch.zeros((), dtype=x.dtype, requires_grad=True)
        opt = torch.optim.LBFGS([beta, b0], max_iter=200, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            z = xs @ beta + b0
            loss = (wts * torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")).mean()
            loss = loss + 0.5 * l2 * beta.square().sum()
            loss.backward()
            return loss

        opt.step(closure)
        beta, bias = beta.detach(), b0.detach()
    else:
        raise DirectionsError(f"--method must be 'regression' or 'logistic', got {method!r}")
    w = beta / sd  # score = w.x + (bias - w.mu)
    norm = float(w.norm())
    if not norm > 0:
        raise DirectionsError("the fitted boundary is degenerate (a zero normal)")
    return (w / norm).float().numpy(), float((bias - w @ mu) / norm)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


@torch.no_grad()
def generated_scores(
    G: LoadedGenerator,
    clf: AttributeClassifier,
    n: int,
    seed: int,
    *,
    batch_size: int = 250,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(codes (n, D) in the edit space, classifier probabilities (n, A)) of ``n`` generated faces."""
    codes, probs = [], []
    for start in range(0, n, batch_size):
        c = G.codes(min(batch_size, n - start), seed, start=start)
        codes.append(c.cpu().numpy())
        probs.append(clf.probabilities(G.render(c)))
        if progress is not None:
            progress(len(c))
    return np.concatenate(codes), np.concatenate(probs)


def _balanced(pred: np.ndarray, y: np.ndarray) -> float:
    tpr = (pred & y).sum() / max(1, y.sum())
    tnr = (~pred & ~y).sum() / max(1, (~y).sum())
    return float((tpr + tnr) / 2)


def find_directions(
    G: LoadedGenerator,
    clf: AttributeClassifier,
    *,
    n: int = 20_000,
    n_measure: int = 1_000,
    method: str = "logistic",
    seed: int = FIT_SEED,
    attributes: Sequence[str] | None = None,
    scored: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    min_auc: float = MIN_AUC,
    min_correlation: float = MIN_CORRELATION,
    log: Callable[[str], None] = lambda s: None,
) -> Directions:
    """Fit a direction per attribute on ``n`` generated faces; offer those the classifier tells apart
    (held-out AUC >= ``min_auc``) whose direction predicts the classifier's logit on ``n_measure`` held-out
    generated faces (correlation >= ``min_correlation``).
    ``scored``: the (codes, probabilities) of those faces and of the held-out ones, when already computed
    (:func:`generated_scores` with ``seed`` and :data:`MEASURE_SEED`), to compare fits without rescoring."""
    t0 = time.perf_counter()
    attrs = list(attributes or clf.attributes)
    unknown = [a for a in attrs if a not in clf.attributes]
    if unknown:
        raise DirectionsError(f"--attributes: the classifier does not know {', '.join(unknown)}")
    if scored is None:
        log(f"scoring {n} generated faces (seed {seed}) and {n_measure} held-out ones (seed {MEASURE_SEED})")
        scored = (*generated_scores(G, clf, n, seed), *generated_scores(G, clf, n_measure, MEASURE_SEED))
    codes, probs, h_codes, h_probs = scored
    normals, sigmas, offsets, offered, per = [], [], [], [], {}
    not_offered: dict[str, str] = {}
    for a in attrs:
        j = clf.attributes.index(a)
        rep = clf.report.get(a, {})
        auc = float(rep.get("auc", float("nan")))
        logit, h_logit = _logit(probs[:, j]), _logit(h_probs[:, j])
        share = float((probs[:, j] >= 0.5).mean())
        entry: dict[str, Any] = {"classifier": rep, "generated_share": round(share, 4)}
        if not auc >= min_auc:
            not_offered[a] = f"the classifier cannot tell it apart (held-out AUC {auc:.2f} < {min_auc})"
            continue
        sides = int(min((probs[:, j] >= 0.5).sum(), (probs[:, j] < 0.5).sum()))
        if method == "logistic" and sides < MIN_SIDE:
            not_offered[a] = f"only {sides} of {n} generated faces on one side of 0.5 (a logistic fit needs {MIN_SIDE})"
            continue
        normal, offset = fit_normal(codes, logit, method)
        h_proj = h_codes @ normal
        entry["boundary_correlation"] = round(float(np.corrcoef(h_proj, h_logit)[0, 1]), 4)
        entry["boundary_balanced_accuracy"] = round(_balanced(h_proj + offset > 0, h_probs[:, j] >= 0.5), 4)
        if not entry["boundary_correlation"] >= min_correlation:
            not_offered[a] = (
                f"no linear direction in {G.edit_space}: correlation {entry['boundary_correlation']:.2f} < "
                f"{min_correlation} with the classifier's logit on {len(h_codes)} held-out generated faces"
            )
            continue
        normals.append(normal)
        sigmas.append(float((codes @ normal).std()))
        offsets.append(offset)
        offered.append(a)
        per[a] = entry
        log(f"{a}: classifier AUC {auc:.3f}, generated {share:.3f}, correlation {entry['boundary_correlation']:.3f}")
    if not offered:
        raise DirectionsError("no attribute passed the checks; nothing to offer (see the classifier's report)")
    info = {
        "model": {"source": Path(G.source).name, "weights_sha1": weights_hash(G), "family": G.family},
        "fit": {
            "method": method,
            "n": n,
            "seed": seed,
            "n_measure": n_measure,
            "measure_seed": MEASURE_SEED,
            "min_auc": min_auc,
            "min_correlation": min_correlation,
            "seconds": round(time.perf_counter() - t0, 1),
        },
        "classifier": clf.report.get("_", {}),
        "not_offered": not_offered,
        "attributes": per,
    }
    return Directions(G.edit_space, offered, np.stack(normals), np.array(sigmas), np.array(offsets), info)


# --------------------------------------------------------------------------------------------
# measuring edits


@torch.no_grad()
def measure_edits(
    G: LoadedGenerator,
    clf: AttributeClassifier,
    dirs: Directions,
    *,
    n: int = 1_000,
    amount: float = 2.0,
    seed: int = MEASURE_SEED,
    attributes: Sequence[str] | None = None,
    keep: Mapping[str, Sequence[str]] | None = None,
    identity: Any = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, dict[str, Any]]:
    """Per attribute, on ``n`` generated faces edited by +``amount`` and -``amount``:

    * ``cross_up``: of the faces scored < 0.5, the share scored >= 0.5 after +amount (``cross_down``:
      of those >= 0.5, the share < 0.5 after -amount); ``share_after_up``/``share_after_down``: the
      share >= 0.5 among all faces after the edit;
    * ``others_change``: the mean |change| of the other offered attributes' probabilities (entanglement),
      and ``most_moved``: the other attribute whose mean signed change is largest, with that change;
    * ``identity``: with an ``identity`` embedder (audit.identity.IdentityEmbedder), the mean dlib
      distance between each face and its edit, and the share below dlib's same-person threshold 0.6.
    ``keep[attr]`` lists attributes held fixed while editing ``attr`` (conditional editing)."""
    codes = G.codes(n, seed)
    base_img = G.render(codes)
    p0 = clf.probabilities(base_img)
    cols = [clf.attributes.index(a) for a in dirs.attributes]
    emb0 = identity.embed(base_img) if identity is not None else None
    out: dict[str, dict[str, Any]] = {}
    for a in attributes or dirs.attributes:
        j = clf.attributes.index(a)
        kept = list((keep or {}).get(a, ()))
        res: dict[str, Any] = {"n": n, "amount": amount, "keep": kept}
        others = [c for c in cols if c != j]
        for sign, tag in ((1.0, "up"), (-1.0, "down")):
            v = torch.from_numpy(dirs.vector({a: sign * amount}, kept)).to(codes.device)
            img = G.render(codes + v)
            p1 = clf.probabilities(img)
            before = p0[:, j] >= 0.5
            after = p1[:, j] >= 0.5
            eligible = ~before if sign > 0 else before
            crossed = (after if sign > 0 else ~after) & eligible
            res[f"cross_{tag}"] = round(float(crossed.sum() / max(1, eligible.sum())), 4)
            res[f"eligible_{tag}"] = int(eligible.sum())
            res[f"share_after_{tag}"] = round(float(after.mean()), 4)
            res[f"target_change_{tag}"] = round(float((p1[:, j] - p0[:, j]).mean()), 4)
            if others:  # entanglement: how much the other offered attributes move
                d = p1[:, others] - p0[:, others]
                k = int(np.argmax(np.abs(d.mean(0))))
                res[f"others_change_{tag}"] = round(float(np.abs(d).mean()), 4)
                res[f"most_moved_{tag}"] = [clf.attributes[others[k]], round(float(d.mean(0)[k]), 4)]
            if kept:  # the mean change of each attribute held fixed
                res[f"kept_change_{tag}"] = {
                    b: round(float((p1[:, clf.attributes.index(b)] - p0[:, clf.attributes.index(b)]).mean()), 4)
                    for b in kept
                }
            if emb0 is not None:
                dist = np.linalg.norm(identity.embed(img) - emb0, axis=1)
                res[f"identity_{tag}"] = round(float(dist.mean()), 4)
                res[f"same_person_{tag}"] = round(float((dist < 0.6).mean()), 4)
        res["share_before"] = round(float((p0[:, j] >= 0.5).mean()), 4)
        out[a] = res
        log(f"{a}: " + ", ".join(f"{k} {v}" for k, v in res.items() if k not in ("n", "amount", "keep")))
    return out
