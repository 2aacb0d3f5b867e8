"""``fakefacegen interpolate``: a latent walk between seeds as an animation and a grid."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .. import bounds
from ..bounds import flag, helped
from ..interpolate import FORMATS, parse_seeds
from . import UsageError
from .flags import add_device, add_model, add_truncation, add_which, device_of, subcommand

EXAMPLES = """examples:
  fakefacegen interpolate --seeds 1,2,3 --frames 16 --out walk/     # bundled model: walk/walk.gif + walk/grid.png
  fakefacegen interpolate runs/00001-celeba64 --seeds 4,8,15,16 --loop --format webp --out walk/
  fakefacegen interpolate model.safetensors --seeds 0,1 --frames 32 --truncation 0.7 --scale 4 --fps 24
  fakefacegen interpolate --seeds projected/me-latent.npy,5,8 --out walk/   # from a projected photo"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = subcommand(
        sub,
        "interpolate",
        "A latent walk between seeds (spherical interpolation) as an animated GIF/WebP and a grid PNG.",
        EXAMPLES,
    )
    add_model(s)
    s.add_argument(
        "--seeds",
        required=True,
        help=f"comma-separated seeds to walk through, e.g. 1,2,3: 2 to {bounds.WALK_SEEDS_MAX} seeds, each "
        f"{bounds.SEED.short()} (seed S is the face `generate --seed S` draws first); an item ending in .npy is "
        "a saved latent, e.g. `fakefacegen project`'s me-latent.npy, to walk from your own face",
    )
    s.add_argument(
        "--frames",
        type=flag(bounds.WALK_FRAMES),
        default=16,
        help=helped("frames per segment, both endpoints included", bounds.WALK_FRAMES, 16),
    )
    s.add_argument("--loop", action="store_true", help="walk back from the last seed to the first")
    add_truncation(s)
    s.add_argument("--format", choices=FORMATS, default="gif", help="animation format (default gif)")
    s.add_argument(
        "--fps", type=flag(bounds.FPS), default=12.0, help=helped("animation frames per second", bounds.FPS, 12)
    )
    s.add_argument(
        "--scale",
        type=flag(bounds.SCALE),
        default=1,
        help=helped("upscale frames and grid by this factor", bounds.SCALE, 1)
        + f"; frames in the whole walk x scale^2 must be at most {bounds.WALK_BUDGET}",
    )
    s.add_argument("--out", default="walk", help="output directory (default walk/)")
    add_which(s)
    add_device(s)
    s.set_defaults(func=run)
    return s


def run(args: argparse.Namespace) -> int:
    from ..interpolate import interpolate_to_dir

    seeds = walk_seeds(args.seeds)
    total = bounds.walk_frames(len(seeds), args.frames, args.loop)
    if total * args.scale**2 > bounds.WALK_BUDGET:
        raise UsageError(
            f"the walk would be {total} frames at --scale {args.scale}: frames x scale^2 must be at most "
            f"{bounds.WALK_BUDGET} (as the demo's largest walk, {bounds.WALK_FRAMES_MAX} frames at scale "
            f"{bounds.SCALE_MAX}); use fewer --seeds or --frames, or a smaller --scale"
        )
    t0 = time.perf_counter()
    files = interpolate_to_dir(
        args.model,
        args.out,
        seeds,
        frames=args.frames,
        truncation=args.truncation,
        psi=args.psi,
        loop=args.loop,
        fmt=args.format,
        fps=args.fps,
        scale=args.scale,
        device=device_of(args),
        which=args.which,
    )
    segs = len(seeds) - (0 if args.loop else 1)
    print(
        f"wrote {files['animation']} and {files['grid']} ({segs} segments x {args.frames} frames) "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    return 0


def walk_seeds(text: str) -> list[int | Path]:
    """--seeds as integers or latent files: 2 to bounds.WALK_SEEDS_MAX of them, each seed in bounds.SEED,
    each file readable and at most bounds.LATENT_FILE_MB; else a one-line error."""
    from ..latents import check_latent_file

    if text.count(",") >= bounds.WALK_SEEDS_MAX:  # before parsing a list that could be any length
        raise UsageError(f"--seeds takes at most {bounds.WALK_SEEDS_MAX} seeds (got {text.count(',') + 1})")
    seeds = parse_seeds(text)
    for s in seeds:
        if isinstance(s, Path):
            check_latent_file(s, "--seeds")
        else:
            bounds.SEED.check("each of --seeds", s, UsageError)
    return seeds
