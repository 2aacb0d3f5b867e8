"""``fakefacegen edit``: edit a face's attributes (smile, age, glasses, hair...) along the model's directions."""

from __future__ import annotations

import argparse

from . import UsageError
from .flags import add_device, add_model, add_seed, device_of, subcommand

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
    s.add_argument("--index", type=int, default=0, help="which face of --seed (default 0)")
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
    s.add_argument(
        "--psi",
        type=float,
        default=1.0,
        help="truncation of the face towards the average latent, in [0, 1] (default 1: off)",
    )
    s.add_argument("--range", type=float, default=3.0, help="the strips run from -RANGE to +RANGE (default 3)")
    s.add_argument("--steps", type=int, default=7, help="faces per strip, 2..33 (default 7)")
    s.add_argument("--scale", type=int, default=1, help="enlarge the PNGs this many times (Lanczos), 1..8 (default 1)")
    s.add_argument("--out", default="edits", help="output directory (default edits/)")
    add_device(s)
    s.set_defaults(func=run)
    return s


def run(a: argparse.Namespace) -> int:
    if a.latent is not None and a.index != 0:
        raise UsageError("--latent and --index do not go together: the latent is the face")
    if not 2 <= a.steps <= 33:
        raise UsageError(f"--steps must be an integer in 2..33 (got {a.steps})")
    if not 1 <= a.scale <= 8:
        raise UsageError(f"--scale must be an integer in 1..8 (got {a.scale})")
    if not 0 < a.range <= 10:
        raise UsageError(f"--range must be a number in (0, 10] (got {a.range})")
    from ..editing import edit_faces, parse_attrs
    from ..generate import check_psi, load_generator

    attrs = parse_attrs(a.attr)
    if not attrs:
        raise UsageError("give at least one --attr NAME=AMOUNT, e.g. --attr Smiling=+2")
    check_psi(a.psi)
    G = load_generator(a.model, device=device_of(a))
    files = edit_faces(
        G,
        a.out,
        attrs,
        keep=a.keep,
        seed=a.seed,
        index=a.index,
        psi=a.psi,
        latent_file=a.latent,
        directions=a.directions,
        k=a.range,
        steps=a.steps,
        scale=a.scale,
    )
    print(f"wrote {len(files)} files to {a.out}/: " + ", ".join(f.name for f in files))
    return 0
