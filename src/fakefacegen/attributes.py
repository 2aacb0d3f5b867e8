"""Face attributes: CelebA's labels file, the names of a prepared dataset's faces, and the project's
own attribute classifier (a small CNN trained on the labelled real faces, with held-out accuracy per
attribute), which scores generated faces for :mod:`fakefacegen.directions`.

The labels file is CelebA's ``list_attr_celeba.txt``: a count line, a line of attribute names, then
one row per image, ``000001.jpg -1 1 ...`` (1 = present, -1 = absent). Faces are matched to rows by
file name (the last part of a dataset face's source name).

The classifier sees 64 px faces (other sizes are resized with antialiasing); it is trained with
binary cross-entropy on all attributes at once, horizontal flips, shifts of up to 4 px and small
brightness/contrast changes, and evaluated on a held-out share of the labelled image ids (a seeded
split by file name, so a photo present at two sizes is on one side).
It is saved as safetensors with its accuracies in the metadata.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .dataset_format import NAMES_FILE

CLASSIFIER_FORMAT = "fakefacegen-attribute-classifier"
CLASSIFIER_SIZE = 64
BUNDLED_CLASSIFIER = "celeba-attributes64.safetensors"
SPLIT_SEED = 20_261_202  # the held-out split of labelled image ids (a fixed value: the docs' figures use it)
TRAIN_SEED = 20_261_203  # initialisation, batch order and augmentation of the classifier's training


class AttributeDataError(ValueError):
    """A labels file, dataset or classifier that cannot be used (one-line message naming it)."""


# --------------------------------------------------------------------------------------------
# the labels file


@dataclass
class Labels:
    """CelebA attribute labels: ``values[i, j]`` is True when image ``files[i]`` has ``attributes[j]``."""

    attributes: list[str]
    files: list[str]
    values: np.ndarray  # bool (N, A)

    def index(self) -> dict[str, int]:
        """Row of each file name."""
        return {f: i for i, f in enumerate(self.files)}


def read_labels(path: str | Path) -> Labels:
    """Parse a CelebA ``list_attr_celeba.txt``; a malformed file is a one-line error naming the line.

    The first line's count is not trusted (the shared file says 202599 and holds 20,000 rows)."""
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AttributeDataError(f"--labels {p}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    if len(lines) < 3 or not lines[0].strip().isdigit():
        raise AttributeDataError(
            f"--labels {p}: not a CelebA attributes file (expected a count line, a line of attribute names, then rows)"
        )
    attributes = lines[1].split()
    if len(set(attributes)) != len(attributes) or not attributes:
        raise AttributeDataError(f"--labels {p}: line 2 must name each attribute once")
    files: list[str] = []
    rows: list[list[int]] = []
    for no, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(attributes) + 1:
            raise AttributeDataError(
                f"--labels {p}: line {no} has {len(parts) - 1} values, expected {len(attributes)} (one per attribute)"
            )
        try:
            vals = [int(v) for v in parts[1:]]
        except ValueError:
            raise AttributeDataError(f"--labels {p}: line {no} has a value that is not 1 or -1") from None
        if any(v not in (1, -1) for v in vals):
            raise AttributeDataError(f"--labels {p}: line {no} has a value that is not 1 or -1")
        files.append(parts[0])
        rows.append(vals)
    if len(set(files)) != len(files):
        raise AttributeDataError(f"--labels {p}: a file name appears on more than one line")
    return Labels(attributes, files, np.asarray(rows, dtype=np.int8).reshape(-1, len(attributes)) > 0)


# --------------------------------------------------------------------------------------------
# which photo each face of a prepared dataset came from


def dataset_names(data: str | Path) -> list[str]:
    """The source file name of each row of a prepared dataset, in row order.

    ``DATA/names.txt`` (one name per row) when it exists; otherwise the names are rebuilt from
    ``manifest.json``'s ``sources`` the way ``prepare`` ordered the files (each source's image files,
    sorted, sources in order, skipped files left out), and checked against the manifest's counts."""
    from .dataset_format import read_manifest

    d = Path(data)
    m = read_manifest(d)
    count = m.get("count")
    names_file = d / NAMES_FILE
    if names_file.is_file():
        try:  # as write_names wrote it: UTF-8, one name a line, "\n" the only line break
            names = [n for n in names_file.read_text(encoding="utf-8").split("\n") if n]
        except UnicodeDecodeError as e:
            raise AttributeDataError(f"{names_file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        if len(names) != count:
            raise AttributeDataError(f"{names_file}: {len(names)} names for the dataset's {count} faces")
        return names
    return _rebuilt_names(d, m)


def _rebuilt_names(d: Path, m: dict[str, Any]) -> list[str]:
    from .prepare.errors import PrepareError
    from .prepare.sources import scan_sources

    sources = m.get("sources")
    if not isinstance(sources, list) or not sources:
        raise AttributeDataError(
            f"{d}: no {NAMES_FILE} and no 'sources' in manifest.json; prepare the dataset again to record its names"
        )
    resolved = [(Path(s["path"]), s["kind"]) for s in sources]
    try:
        items, seen = scan_sources(resolved, None)
    except (PrepareError, OSError) as e:
        raise AttributeDataError(f"{d}: no {NAMES_FILE}, and its sources cannot be listed again ({e})") from None
    multi = isinstance(m.get("source"), list)
    skipped = {s.get("path") for s in m.get("skipped") or []}
    names = []
    for i, name in items:
        label = f"{i}:{name}" if multi else name
        if label not in skipped:
            names.append(name)
    want = [s.get("files_seen") for s in sources]
    if seen != want or len(names) != m.get("count"):
        raise AttributeDataError(
            f"{d}: no {NAMES_FILE}, and its sources now list {sum(seen)} files ({len(names)} usable) where "
            f"prepare saw {sum(w or 0 for w in want)} ({m.get('count')} faces); prepare the dataset again"
        )
    return names


def file_id(name: str) -> str:
    """The labels file's key for a dataset face's source name: its last part (``a/000001.jpg`` -> ``000001.jpg``)."""
    return name.replace("\\", "/").rsplit("/", 1)[-1]


@dataclass
class LabelledFaces:
    """The dataset faces that have labels: ``images[i]`` (uint8 HWC) is the photo ``ids[i]``."""

    images: np.ndarray
    values: np.ndarray  # bool (N, A)
    ids: list[str]
    attributes: list[str]


def labelled_faces(data: str | Path, labels: Labels) -> LabelledFaces:
    """The faces of dataset ``data`` whose source file has a row in ``labels``; none is an error."""
    from .dataset_format import open_dataset

    names = dataset_names(data)
    _, images = open_dataset(data)
    where = labels.index()
    rows, lab = [], []
    for r, n in enumerate(names):
        j = where.get(file_id(n))
        if j is not None:
            rows.append(r)
            lab.append(j)
    if not rows:
        raise AttributeDataError(
            f"--data {data}: none of its {len(names)} faces has a row in the labels file "
            f"(file names such as {file_id(names[0])!r} vs {labels.files[0]!r})"
        )
    return LabelledFaces(
        np.asarray(images[rows]), labels.values[lab], [file_id(names[r]) for r in rows], labels.attributes
    )


def held_out_mask(ids: Sequence[str], fraction: float, seed: int = SPLIT_SEED) -> np.ndarray:
    """A seeded split by image id: True for the ids held out (the same id is always on the same side)."""
    uniq = sorted(set(ids))
    perm = np.random.default_rng(seed).permutation(len(uniq))
    n_out = int(round(fraction * len(uniq)))
    out = {uniq[i] for i in perm[:n_out]}
    return np.array([i in out for i in ids], dtype=bool)


# --------------------------------------------------------------------------------------------
# the classifier


class AttributeNet(nn.Module):
    """uint8-range faces (N, 3, 64, 64) scaled to [-1, 1] -> one logit per attribute (N, A).

    A stride-2 stem, three stages (3x3 conv, then a stride-2 3x3 conv that doubles the channels),
    a last 3x3 conv at 4x4, global average pooling and a linear head; BatchNorm and ReLU throughout."""

    def __init__(self, n_attrs: int, width: int = 16):
        super().__init__()

        def cbr(a: int, b: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(a, b, 3, stride, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]

        layers = cbr(3, width, 2)
        c = width
        for _ in range(3):
            layers += cbr(c, c, 1) + cbr(c, 2 * c, 2)
            c *= 2
        layers += cbr(c, c, 1)
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2))
        self.head = nn.Linear(c, n_attrs)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> float (N, 3, 64, 64) in [-1, 1] (antialiased resize when S != 64)."""
    x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    if x.shape[-1] != CLASSIFIER_SIZE:
        x = F.interpolate(x, size=(CLASSIFIER_SIZE, CLASSIFIER_SIZE), mode="bilinear", antialias=True)
    return x.contiguous()


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flips, shifts of up to 4 px (reflected borders), brightness/contrast +-10%."""
    n = x.shape[0]
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = F.pad(x, (4, 4, 4, 4), mode="reflect")
    dx, dy = torch.randint(0, 9, (2, n), generator=g)
    x = torch.stack([pad[i, :, int(dy[i]) : int(dy[i]) + 64, int(dx[i]) : int(dx[i]) + 64] for i in range(n)])
    scale = 1 + (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.2
    shift = (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.2
    mean = x.mean((1, 2, 3), keepdim=True)
    return ((x - mean) * scale + mean + shift).clamp(-1, 1)


@dataclass
class AttributeClassifier:
    """The trained network, its attribute names and its held-out report (``report[attr]``: accuracy,
    majority baseline, balanced accuracy, AUC, positives share; ``report['_']``: how it was trained)."""

    net: AttributeNet
    attributes: list[str]
    report: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def probabilities(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """float32 (N, A): the probability of each attribute for uint8 faces (N, S, S, 3)."""
        self.net.eval()
        out = [
            torch.sigmoid(self.net(_to_input(images[i : i + batch_size]))) for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out).numpy() if out else np.empty((0, len(self.attributes)), np.float32)

    def accuracy(self, attr: str) -> float:
        return float(self.report[attr]["accuracy"])

    def save(self, path: str | Path) -> None:
        """safetensors (fp16 weights) with the attribute names, width and report in the metadata, atomically."""
        from safetensors.torch import save

        from .atomic import atomic_write

        tensors = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in self.net.state_dict().items()}
        meta = {
            "format": CLASSIFIER_FORMAT,
            "attributes": json.dumps(self.attributes),
            "width": str(self.net.width),
            "report": json.dumps(self.report),
        }
        atomic_write(Path(path), lambda f: f.write(save(tensors, metadata=meta)))


def bundled_classifier_path() -> Path:
    return Path(str(resources.files("fakefacegen").joinpath("assets").joinpath(BUNDLED_CLASSIFIER)))


def load_classifier(path: str | Path | None = None) -> AttributeClassifier:
    """The classifier saved at ``path`` (default: the one shipped with the package)."""
    from safetensors import safe_open

    p = bundled_classifier_path() if path is None else Path(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # SafetensorError, OSError, ... for missing or damaged files
        raise AttributeDataError(
            f"--classifier {p}: not a readable classifier file ({str(e).splitlines()[0][:120]})"
        ) from None
    if meta.get("format") != CLASSIFIER_FORMAT:
        raise AttributeDataError(f"--classifier {p}: not a FakeFaceGen attribute classifier")
    attributes = json.loads(meta["attributes"])
    net = AttributeNet(len(attributes), int(meta["width"]))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    net.eval().requires_grad_(False)
    return AttributeClassifier(net, attributes, json.loads(meta.get("report") or "{}"))


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half)."""
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    s = score[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def held_out_report(prob: np.ndarray, y: np.ndarray, attributes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per attribute on held-out faces: accuracy at 0.5, the majority-class baseline, balanced accuracy
    (mean of the true-positive and true-negative rates), ROC AUC and the share of positives."""
    out = {}
    pred = prob >= 0.5
    for j, a in enumerate(attributes):
        yj, pj = y[:, j], pred[:, j]
        pos = float(yj.mean())
        tpr = float((pj & yj).sum() / max(1, yj.sum()))
        tnr = float((~pj & ~yj).sum() / max(1, (~yj).sum()))
        out[a] = {
            "accuracy": round(float((pj == yj).mean()), 4),
            "majority": round(max(pos, 1 - pos), 4),
            "balanced_accuracy": round((tpr + tnr) / 2, 4),
            "auc": round(_auc(prob[:, j], yj), 4),
            "positives": round(pos, 4),
        }
    return out


def train_classifier(
    faces: LabelledFaces,
    *,
    epochs: int = 24,
    batch_size: int = 64,
    lr: float = 2e-3,
    width: int = 16,
    held_out: float = 0.15,
    progress: Callable[[str], None] | None = None,
) -> AttributeClassifier:
    """Train the classifier on the faces outside the held-out split and report on the held-out ones.

    AdamW (weight decay 1e-4) with a one-cycle cosine schedule; nothing is selected on the held-out
    faces (the number of epochs is fixed), so their figures are an honest estimate."""
    if not 0 < held_out < 1:
        raise AttributeDataError(f"held-out fraction must be in (0, 1), got {held_out}")
    test = held_out_mask(faces.ids, held_out)
    tr_x = torch.from_numpy(np.ascontiguousarray(faces.images[~test]))
    tr_y = torch.from_numpy(faces.values[~test].astype(np.float32))
    if len(tr_x) < batch_size:
        raise AttributeDataError(f"only {len(tr_x)} labelled training faces; need at least {batch_size}")
    g = torch.Generator().manual_seed(TRAIN_SEED)
    torch.manual_seed(TRAIN_SEED)
    net = AttributeNet(len(faces.attributes), width)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = len(tr_x) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    t0 = time.perf_counter()
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(tr_x), generator=g)
        total = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * batch_size : (s + 1) * batch_size]
            x = _augment(_to_input(tr_x[idx]), g)
            loss = F.binary_cross_entropy_with_logits(net(x), tr_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        if progress is not None:
            progress(f"epoch {ep + 1}/{epochs}: loss {total / steps_per_epoch:.4f} ({time.perf_counter() - t0:.0f} s)")
    net.eval().requires_grad_(False)
    clf = AttributeClassifier(net, list(faces.attributes))
    prob = clf.probabilities(faces.images[test])
    clf.report = dict(held_out_report(prob, faces.values[test], faces.attributes))
    clf.report["_"] = {
        "train_faces": int((~test).sum()),
        "held_out_faces": int(test.sum()),
        "split": f"seeded by image id (seed {SPLIT_SEED}), {held_out:.0%} of ids held out",
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "width": width,
        "seconds": round(time.perf_counter() - t0, 1),
        "parameters": sum(p.numel() for p in net.parameters()),
    }
    return clf
