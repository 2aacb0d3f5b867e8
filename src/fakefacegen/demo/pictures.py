"""Rendering (on the worker thread): the faces of (seed, index), the walk between two faces, grids,
and their PNG/GIF encoding.

Face ``index`` of ``seed`` is image ``index`` of ``G.sample(n, seed)`` (the noise of (seed, index)), so
the page, ``fakefacegen generate --seed S`` and a shared link all show the same faces."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from ..generate import LoadedGenerator, noise
from ..images import make_grid, upscale
from .params import FaceId

PNG_LEVEL = 3  # zlib level: level 9 is ~3x slower for a few % smaller PNGs, a poor trade for a local page


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W, 3) -> PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def encode_gif(frames: np.ndarray, fps: float) -> bytes:
    """uint8 (F, H, W, 3) -> an endlessly looping animated GIF (same settings as ``interpolate``)."""
    ims = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    ims[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=ims[1:],
        duration=max(1, round(1000 / fps)),
        loop=0,
        optimize=False,
        disposal=1,
    )
    return buf.getvalue()


def face_noise(z_dim: int, faces: list[FaceId], truncation: float | None) -> torch.Tensor:
    """(len(faces), z_dim): row k is the noise of ``faces[k]``, the row ``G.sample`` would use."""
    return torch.cat([noise(1, z_dim, f.seed, truncation=truncation, start=f.index) for f in faces])


def walk_noise(z_dim: int, a: FaceId, b: FaceId, frames: int, truncation: float | None) -> torch.Tensor:
    """(frames, z_dim): the spherical walk from face ``a`` (frame 0) to face ``b`` (last frame), exact ends."""
    from ..interpolate import slerp

    za, zb = face_noise(z_dim, [a, b], truncation)
    return slerp(za, zb, torch.linspace(0, 1, frames, dtype=torch.float64)).to(torch.float32)


def grid_png(G: LoadedGenerator, seed: int, n: int, truncation: float | None, cols: int, pad: int, scale: int) -> bytes:
    """The ``n`` faces of ``seed`` as one PNG grid (``cols`` wide, ``pad`` pixels apart before scaling)."""
    imgs = G.synthesize(noise(n, G.z_dim, seed, truncation=truncation))
    return encode_png(make_grid(upscale(imgs, scale), nrow=cols, pad=pad * scale))


def face_pngs(G: LoadedGenerator, items: list[tuple[FaceId, float | None, int]]) -> list[bytes]:
    """PNGs of several faces (each with its own truncation and scale) from one forward pass."""
    z = torch.cat([face_noise(G.z_dim, [f], t) for f, t, _ in items])
    imgs = G.synthesize(z)
    return [encode_png(upscale(img[None], scale)[0]) for img, (_, _, scale) in zip(imgs, items)]


def walk_image(
    G: LoadedGenerator,
    a: FaceId,
    b: FaceId,
    frames: int,
    truncation: float | None,
    scale: int,
    fmt: str,
    fps: float = 12.0,
) -> bytes:
    """The walk a -> b as a PNG strip (``fmt="png"``) or a looping GIF at ``fps``."""
    imgs = upscale(G.synthesize(walk_noise(G.z_dim, a, b, frames, truncation)), scale)
    if fmt == "png":
        return encode_png(make_grid(imgs, nrow=frames, pad=2 * scale))
    # there and back, without showing either end twice in a row, so the loop has no stutter
    return encode_gif(np.concatenate([imgs, imgs[-2:0:-1]]), fps)
