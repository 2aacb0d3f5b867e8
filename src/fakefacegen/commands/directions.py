"""``fakefacegen directions``: find attribute directions (smile, age, glasses, hair...) in a generator's
latent space, scored by the project's attribute classifier (InterFaceGAN-style)."""

from __future__ import annotations

import argparse
import sys

from ..bounds import Range, flag, helped
from . import UsageError
from .flags import add_count, add_device, add_model, device_of, subcommand

FIT_N = Range(100, 1_000_000)
MEASURE_N = Range(0, 100_000)
EPOCHS = Range(1, 1000)

EXAMPLES = """examples:
  fakefacegen directions               # the bundled model, the shipped classifier: assets/celeba64-directions.json
  fakefacegen directions runs/00002-style --out style-directions.json
  fakefacegen directions --data data/celeba64 --labels list_attr_celeba.txt --save-classifier clf.safetensors
                                                  # train the attribute classifier on the labelled faces first"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = subcommand(
        sub,
        "directions",
        "Find a latent direction per face attribute (W for the style family, z for the DCGAN) from generated "
        "faces scored by the attribute classifier; write them with their measured quality as JSON.",
        EXAMPLES,
    )
    add_model(s)
    s.add_argument(
        "--data", default=None, help="prepared dataset of labelled real faces: train a new attribute classifier on it"
    )
    s.add_argument("--labels", default=None, help="CelebA list_attr_celeba.txt with the labels of --data's faces")
    s.add_argument(
        "--classifier",
        default=None,
        help="attribute classifier .safetensors to score faces with (default: the one shipped with fakefacegen)",
    )
    s.add_argument("--save-classifier", default=None, help="where to save the classifier trained on --data/--labels")
    s.add_argument(
        "--epochs", type=flag(EPOCHS), default=24, help=helped("epochs of the classifier's training", EPOCHS, 24)
    )
    s.add_argument(
        "--out", default=None, help="directions file to write (default: NAME-directions.json next to the model file)"
    )
    add_count(s, 20_000, "generated faces to fit the directions on", FIT_N)
    s.add_argument(
        "--measure",
        type=flag(MEASURE_N),
        default=1_000,
        help=helped("held-out generated faces to measure each edit on (+2 and -2), 0 = none", MEASURE_N, 1000),
    )
    s.add_argument(
        "--identity",
        action="store_true",
        help="also measure how far identity moves under each edit (dlib, the audit extra; about 0.1 s per face)",
    )
    s.add_argument(
        "--method",
        choices=("logistic", "regression"),
        default="logistic",
        help="boundary fit: class-balanced logistic regression on the classifier's 0.5 decisions, or ridge "
        "regression of its logit (default logistic)",
    )
    add_device(s)
    s.set_defaults(func=run)
    return s


def run(a: argparse.Namespace) -> int:
    if (a.data is None) != (a.labels is None):
        raise UsageError("--data and --labels go together: the labelled faces to train the classifier on")
    if a.data is not None and a.classifier is not None:
        raise UsageError("--classifier reads a trained classifier; with --data/--labels a new one is trained")
    if a.save_classifier is not None and a.data is None:
        raise UsageError("--save-classifier needs --data and --labels (the classifier to save is trained on them)")
    from ..attributes import labelled_faces, load_classifier, read_labels, train_classifier
    from ..directions import directions_path, find_directions, measure_edits
    from ..generate import load_generator

    def log(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    G = load_generator(a.model, device=device_of(a))
    out = a.out or directions_path(G.source)
    identity = None
    if a.identity:
        from ..audit.identity import IdentityEmbedder

        identity = IdentityEmbedder()
    if a.data is not None:
        faces = labelled_faces(a.data, read_labels(a.labels))
        log(f"training the attribute classifier on {len(faces.ids)} labelled faces of {a.data}")
        clf = train_classifier(faces, epochs=a.epochs, progress=log)
        if a.save_classifier:
            clf.save(a.save_classifier)
            log(f"wrote {a.save_classifier}")
    else:
        clf = load_classifier(a.classifier)
    dirs = find_directions(G, clf, n=a.n, n_measure=max(a.measure, 200), method=a.method, log=log)
    if a.measure:
        measured = measure_edits(G, clf, dirs, n=a.measure, identity=identity, log=log)
        for name, m in measured.items():
            dirs.info["attributes"][name]["measured"] = m
    dirs.save(out)
    print(f"wrote {out}: {len(dirs.attributes)} attributes offered ({', '.join(dirs.attributes)})")
    if dirs.info["not_offered"]:
        print(f"not offered: {', '.join(dirs.info['not_offered'])}")
    return 0
