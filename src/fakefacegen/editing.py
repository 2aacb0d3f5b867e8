"""Applying attribute edits: a latent plus ``{attribute: amount}`` -> the edited latent, strips of a face
from -k to +k, and what ``fakefacegen edit`` writes.

An amount is in standard deviations of the generated latents along the attribute's direction
(:mod:`fakefacegen.directions`): +2 makes a face clearly smile, -2 clearly not. The demo calls
:func:`edit_latent` (a vector sum plus a cached k x k solve: microseconds) and renders the result with
``G.render``; the latent is z (DCGAN) or w / W+ (style family), whatever :func:`latent_for` returns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from .directions import Directions, DirectionsError

if TYPE_CHECKING:
    from .generate import LoadedGenerator

L = TypeVar("L", np.ndarray, torch.Tensor)


def edit_latent(dirs: Directions, latent: L, attrs: Mapping[str, float], keep: Sequence[str] = ()) -> L:
    """``latent`` moved by the edit ``attrs`` (``{"Smiling": 2.0}``) holding ``keep`` fixed; same type
    and shape. Any shape ending in the edit space's dimension: z or w (D,), (N, D), W+ (N, blocks, D)
    (every block moves by the same step)."""
    if latent.shape[-1] != dirs.dim:
        raise DirectionsError(f"the latent's last dimension is {latent.shape[-1]}; these directions are {dirs.dim}-d")
    v = dirs.vector(attrs, keep)
    if isinstance(latent, torch.Tensor):
        return latent + torch.from_numpy(v).to(latent.device, latent.dtype)
    return latent + v.astype(latent.dtype, copy=False)


def latent_for(
    G: LoadedGenerator,
    *,
    seed: int = 0,
    index: int = 0,
    psi: float = 1.0,
    truncation: float | None = None,
    latent: np.ndarray | torch.Tensor | None = None,
    source: str = "--latent",
) -> torch.Tensor:
    """The latent to edit, batched: face ``index`` of ``seed`` in the edit space (1, D), or a saved
    ``latent`` (``fakefacegen project``'s NAME-latent.npy: z for the DCGAN, W+ for the style family)."""
    if latent is not None:
        return G.checked_latents(latent, source)
    if index < 0:
        raise ValueError(f"--index must be >= 0, got {index}")
    return G.codes(1, seed, start=index, psi=psi, truncation=truncation)


def amounts(k: float, steps: int) -> np.ndarray:
    """``steps`` evenly spaced amounts from -k to +k."""
    if not (k > 0 and np.isfinite(k)):
        raise ValueError(f"--range must be a number > 0, got {k}")
    if steps < 2:
        raise ValueError(f"--steps must be >= 2, got {steps}")
    return np.linspace(-k, k, steps)


@torch.no_grad()
def strip(
    G: LoadedGenerator,
    dirs: Directions,
    base: torch.Tensor,
    attr: str,
    k: float = 3.0,
    steps: int = 7,
    *,
    others: Mapping[str, float] | None = None,
    keep: Sequence[str] = (),
) -> np.ndarray:
    """uint8 (steps, R, R, 3): the face ``base`` (one latent, batched) with ``attr`` from -k to +k, the
    other edits ``others`` applied as given and ``keep`` held fixed."""
    rest = {a: v for a, v in (others or {}).items() if a != attr}
    lat = torch.cat([edit_latent(dirs, base, {**rest, attr: float(a)}, keep) for a in amounts(k, steps)])
    return G.render(lat)


def parse_attrs(items: Sequence[str]) -> dict[str, float]:
    """``["Smiling=+2", "Young=-1"]`` -> ``{"Smiling": 2.0, "Young": -1.0}``; one-line errors naming ``--attr``."""
    out: dict[str, float] = {}
    for it in items:
        name, sep, val = it.partition("=")
        name = name.strip()
        try:
            amount = float(val)
        except ValueError:
            amount = float("nan")
        if not sep or not name or not np.isfinite(amount):
            raise ValueError(f"--attr {it!r}: expected NAME=AMOUNT, e.g. Smiling=+2 (a finite number of sigmas)")
        if name in out:
            raise ValueError(f"--attr {name}: given more than once")
        out[name] = amount
    return out


def edit_faces(
    G: LoadedGenerator,
    out: str | Path,
    attrs: Mapping[str, float],
    *,
    keep: Sequence[str] = (),
    seed: int = 0,
    index: int = 0,
    psi: float = 1.0,
    truncation: float | None = None,
    latent_file: str | Path | None = None,
    directions: str | Path | None = None,
    k: float = 3.0,
    steps: int = 7,
    scale: int = 1,
) -> list[Path]:
    """What ``fakefacegen edit`` writes into ``out``: NAME.png (the face), NAME-edit.png (edited),
    NAME-strip-ATTR.png per edited attribute (-k..+k, the other edits applied), NAME-edit.json."""
    from .images import make_grid, save_png, upscale
    from .latents import read_latent_file

    if not attrs:
        raise ValueError("give at least one --attr NAME=AMOUNT")
    if scale < 1:
        raise ValueError(f"--scale must be >= 1, got {scale}")
    amounts(k, steps)  # the strip's settings are checked before anything is written
    dirs = G.directions(directions)
    dirs.vector(attrs, keep)  # unknown names and impossible keeps fail before anything is written
    if latent_file is not None:
        p = Path(latent_file)
        saved = read_latent_file(p)
        base = latent_for(G, latent=saved, source=f"--latent {p}")
        if len(base) != 1:
            raise ValueError(f"--latent {p}: holds {len(base)} latents; give a file with one")
        name = p.stem.removesuffix("-latent")
    else:
        base = latent_for(G, seed=seed, index=index, psi=psi, truncation=truncation)
        name = f"seed{seed}-{index:05d}"
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    face = G.render(base)
    edited = G.render(edit_latent(dirs, base, attrs, keep))
    written = [outdir / f"{name}.png", outdir / f"{name}-edit.png"]
    save_png(upscale(face, scale)[0], written[0])
    save_png(upscale(edited, scale)[0], written[1])
    for a in attrs:
        row = strip(G, dirs, base, a, k, steps, others=attrs, keep=keep)
        p = outdir / f"{name}-strip-{a}.png"
        save_png(make_grid(upscale(row, scale), nrow=steps), p)
        written.append(p)
    record: dict[str, Any] = {
        "model": G.source,
        "face": {"latent": str(latent_file)}
        if latent_file is not None
        else {"seed": seed, "index": index, "psi": psi, "truncation": truncation},
        "attrs": dict(attrs),
        "keep": list(keep),
        "strip": [round(float(a), 4) for a in amounts(k, steps)],
        "space": dirs.space,
        "files": [p.name for p in written],
    }
    j = outdir / f"{name}-edit.json"
    from .atomic import atomic_write_text

    atomic_write_text(j, json.dumps(record, indent=1) + "\n")
    return written + [j]
