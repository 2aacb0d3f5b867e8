"""``fakefacegen edit``: edit a face's attributes (smile, age, glasses, hair...) along the model's directions."""

from __future__ import annotations

import argparse

from .. import bounds
from ..bounds import Range, flag, helped
from . import UsageError
from .flags import add_device, add_model, add_seed, add_truncation, device_of, subcommand

INDEX = Range(0, 2**31 - 1)  # the demo's INDEX_MAX
STEPS = Range(2, 33)
RANGE = Range(0, 10, integer=False, lo_open=True)

EXAMPLES = """examples:
  fakefacegen edit --seed 0 --index 3 --attr Smiling=+2 --out edits/     # face 3 of seed 0, made to smile
  fakefacegen edit --seed 1 --attr Young=-2 --attr Eyeglasses=+2 --keep Male --out edits/
  fakefacegen edit --latent proj/me-latent.npy --attr Blond_Hair=+2 --out edits/   # a projected photo
writes OUT/NAME.png (the face), NAME-edit.png, NAME-strip-ATTR.png (ATTR from -range to +range) and NAME-edit.json"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = subcommand(
        sub,
        "edit",
        "Edit a generated face (or a projected photo's latent) along attribute directions: write the edited face "
        "and a strip from -range to +range per attribute.",
        EXAMPLES,
    )
    add_model(s)
    add_seed(s)
    s.add_argument("--index", type=flag(INDEX), default=0, help=helped("which face of --seed", INDEX, 0))
    s.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="NAME=AMOUNT",
        help="an attribute and how far to move it, in standard deviations of the latents, e.g. Smiling=+2 or "
        "Young=-1; repeat for several",
    )
    s.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="NAME",
        help="an attribute to hold fixed while editing (conditional editing), e.g. Male; repeat for several",
    )
    s.add_argument("--latent", default=None, metavar="FILE", help="edit this saved latent (project's NAME-latent.npy)")
    s.add_argument(
        "--directions", default=None, help="directions file (default: NAME-directions.json next to the model)"
    )
    add_truncation(s)
    s.add_argument(
        "--range", type=flag(RANGE), default=3.0, help=helped("the strips run from -RANGE to +RANGE", RANGE, 3)
    )
    s.add_argument("--steps", type=flag(STEPS), default=7, help=helped("faces per strip", STEPS, 7))
    s.add_argument(
        "--scale", type=flag(bounds.SCALE), default=1, help=helped("enlarge the PNGs (Lanczos)", bounds.SCALE, 1)
    )
    s.add_argument("--out", default="edits", help="output directory (default edits/)")
    add_device(s)
    s.set_defaults(func=run)
    return s


def run(a: argparse.Namespace) -> int:
    if a.latent is not None and a.index != 0:
        raise UsageError("--latent and --index do not go together: the latent is the face")
    from ..editing import edit_faces, parse_attrs
    from ..generate import load_generator

    attrs = parse_attrs(a.attr)
    if not attrs:
        raise UsageError("give at least one --attr NAME=AMOUNT, e.g. --attr Smiling=+2")
    G = load_generator(a.model, device=device_of(a))
    files = edit_faces(
        G,
        a.out,
        attrs,
        keep=a.keep,
        seed=a.seed,
        index=a.index,
        psi=a.psi,
        truncation=a.truncation,
        latent_file=a.latent,
        directions=a.directions,
        k=a.range,
        steps=a.steps,
        scale=a.scale,
    )
    print(f"wrote {len(files)} files to {a.out}/: " + ", ".join(f.name for f in files))
    return 0
