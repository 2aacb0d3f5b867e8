"""``fakefacegen generate``: faces from a trained generator (the bundled model by default)."""

from __future__ import annotations

import argparse
import time

from .. import bounds
from . import UsageError
from .flags import (
    add_batch_size,
    add_count,
    add_device,
    add_model,
    add_seed,
    add_truncation,
    add_which,
    device_of,
    subcommand,
)

EXAMPLES = """examples:
  fakefacegen generate                               # the bundled model: 64 faces + grid.png in faces/
  fakefacegen generate runs/00001-celeba64 --n 64 --seed 1 --out faces/
  fakefacegen generate model.safetensors --n 10000 --no-grid --out fid_fakes/
  fakefacegen generate --latent proj/me-latent.npy --out faces/   # the face of a projected photo"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = subcommand(sub, "generate", "Sample faces from a trained generator (the bundled model by default).", EXAMPLES)
    add_model(s)
    add_count(s, 64, "number of faces")
    add_seed(s)
    add_truncation(s)
    s.add_argument("--out", default="faces", help="output directory (default faces/)")
    s.add_argument("--no-grid", action="store_true", help="do not write grid.png")
    s.add_argument("--grid-only", action="store_true", help="write only grid.png, no per-face PNGs")
    s.add_argument(
        "--latent",
        nargs="+",
        default=None,
        metavar="FILE",
        help="instead of seeds: the faces of saved latents (.npy, e.g. `fakefacegen project`'s NAME-latent.npy), "
        f"written as OUT/NAME.png; at most {bounds.LATENT_FILE_MB} MiB and "
        f"{bounds.LATENTS_PER_FILE.hi} latents a file",
    )
    add_which(s)
    add_device(s)
    add_batch_size(s, 256)
    s.set_defaults(func=run)
    return s


def run(a: argparse.Namespace) -> int:
    if a.no_grid and a.grid_only:
        raise UsageError("--no-grid and --grid-only together would write nothing; give one of them")
    from ..generate import generate_images, load_generator
    from ..latents import check_latent_file

    device = device_of(a)
    if a.latent:
        for f in a.latent:  # before the model is loaded
            check_latent_file(f)
    if a.which == "best" and a.model:
        # resolve the checkpoint here so generate_images stays simple
        G = load_generator(a.model, which="best")
        a.model = G.source
    t0 = time.perf_counter()
    if a.latent:
        return _from_latents(a, device, t0)
    files = generate_images(
        a.model,
        a.out,
        n=a.n,
        seed=a.seed,
        truncation=a.truncation,
        psi=a.psi,
        grid=not a.no_grid,
        pngs=not a.grid_only,
        device=device,
        batch_size=a.batch_size,
        progress=a.n > 1024,
    )
    grid = [f for f in files if f.name == "grid.png"]
    took = f" in {time.perf_counter() - t0:.1f}s"
    if a.grid_only:
        print(f"wrote a grid of {a.n} faces to {grid[0]}{took}")
    else:
        print(f"wrote {len(files) - len(grid)} faces to {a.out}/" + (f" and {grid[0]}" if grid else "") + took)
    return 0


def _from_latents(a: argparse.Namespace, device: str, t0: float) -> int:
    from pathlib import Path

    from ..generate import load_generator
    from ..images import save_png
    from ..latents import read_latent_file

    G = load_generator(a.model, device=device)
    out = Path(a.out)
    faces = []
    for f in map(Path, a.latent):
        latent = read_latent_file(f)
        count = 1 if latent.ndim <= (2 if G.family == "style" else 1) else latent.shape[0]
        bounds.LATENTS_PER_FILE.check(f"{f}: the number of latents", count)
        faces.append((f, G.synthesize_latents(latent, source=str(f))))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f, imgs in faces:
        for i, img in enumerate(imgs):
            p = out / (f"{f.stem}.png" if len(imgs) == 1 else f"{f.stem}-{i:05d}.png")
            save_png(img, p)
            written.append(p)
    print(f"wrote {len(written)} face(s) from {len(faces)} latent file(s) to {out}/ in {time.perf_counter() - t0:.1f}s")
    return 0
