"""Rendering (on the worker thread): the faces of (seed, index), the walk between two faces, grids,
attribute edits of faces and walk ends, and their PNG/GIF encoding.

Face ``index`` of ``seed`` is image ``index`` of ``G.sample(n, seed)`` (the noise of (seed, index)), so
the page, ``fakefacegen generate --seed S`` and a shared link all show the same faces."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..directions import Directions
from ..editing import edit_latent, latent_for
from ..generate import LoadedGenerator, noise
from ..images import encode_animation, make_grid, upscale
from .params import Edit, FaceId

PNG_LEVEL = 3  # zlib level: level 9 is ~3x slower for a few % smaller PNGs, a poor trade for a local page


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W, 3) -> PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def encode_gif(frames: np.ndarray, fps: float, back: bool = False) -> bytes:
    """uint8 (F, H, W, 3) -> an endlessly looping animated GIF (:func:`fakefacegen.images.encode_animation`);
    ``back``: then the frames in reverse (without repeating either end), so the loop goes there and back
    without a stutter."""
    if back:
        frames = np.concatenate([frames, frames[-2:0:-1]])
    return encode_animation(frames, "gif", fps=fps)


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


FaceItem = tuple[FaceId, float | None, int, Edit]  # a face, its truncation, scale and attribute edit


def edited_codes(
    G: LoadedGenerator, dirs: Directions | None, face: FaceId, truncation: float | None, edit: Edit
) -> torch.Tensor:
    """(1, D): the face's latent in the edit space with ``edit`` applied, as ``G.edit`` makes it
    (:func:`fakefacegen.editing.latent_for`, then :func:`fakefacegen.editing.edit_latent`)."""
    base = latent_for(G, seed=face.seed, index=face.index, truncation=truncation)
    if not edit:
        return base
    assert dirs is not None, "an edit reached the renderer of a model without directions"
    return edit_latent(dirs, base, dict(edit))


def face_pngs(G: LoadedGenerator, items: list[FaceItem], dirs: Directions | None = None) -> list[bytes]:
    """PNGs of several faces (each with its own truncation, scale and edit) from one forward pass."""
    if any(edit for *_, edit in items):
        imgs = G.render(torch.cat([edited_codes(G, dirs, f, t, e) for f, t, _, e in items]))
    else:
        imgs = G.synthesize(torch.cat([face_noise(G.z_dim, [f], t) for f, t, _, _ in items]))
    return [encode_png(upscale(img[None], scale)[0]) for img, (_, _, scale, _) in zip(imgs, items)]


def face_latent(G: LoadedGenerator, face: FaceId, truncation: float | None) -> np.ndarray:
    """The latent of a face in the space ``fakefacegen.project`` uses: z (z_dim,) for the DCGAN,
    W+ (blocks, w_dim) for the style family."""
    z = face_noise(G.z_dim, [face], truncation)
    if G.family != "style":
        return z[0].numpy()
    net: Any = G.net
    with torch.no_grad():
        w = net.mapping(z.to(G.device))[0].cpu()
    return w[None].repeat(len(net.blocks), 1).numpy()


def latent_walk(G: LoadedGenerator, a: np.ndarray, b: np.ndarray, frames: int) -> np.ndarray:
    """uint8 (frames, R, R, 3): the walk between two latents of ``project``'s space, exact ends: along
    a great circle for the DCGAN's z (as between two faces), straight in W+ for the style family."""
    from ..interpolate import slerp

    t = torch.linspace(0, 1, frames, dtype=torch.float64)
    ta, tb = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if G.family == "style":
        lat = ta[None] + (tb - ta)[None] * t[:, None, None]
    else:
        lat = slerp(ta, tb, t)
    return G.synthesize_latents(lat.to(torch.float32), "the walk")


Walker = FaceId | np.ndarray  # a face, or a projected photo's latent


def edited_end(
    G: LoadedGenerator, dirs: Directions | None, end: Walker, edit: Edit, truncation: float | None
) -> Walker:
    """One end of a walk with ``edit`` applied: unchanged without an edit, else the edited latent in the
    space the walk interpolates (z for the DCGAN, W+ for the style family, see :func:`face_latent`)."""
    if not edit:
        return end
    assert dirs is not None, "an edit reached the renderer of a model without directions"
    lat = face_latent(G, end, truncation) if isinstance(end, FaceId) else end
    return edit_latent(dirs, np.asarray(lat, np.float32), dict(edit))


def walk_image(
    G: LoadedGenerator,
    a: Walker,
    b: Walker,
    frames: int,
    truncation: float | None,
    scale: int,
    fmt: str,
    fps: float = 12.0,
) -> bytes:
    """The walk a -> b as a PNG strip (``fmt="png"``) or a looping GIF at ``fps`` (there and back)."""
    if isinstance(a, FaceId) and isinstance(b, FaceId):
        raw = G.synthesize(walk_noise(G.z_dim, a, b, frames, truncation))
    else:
        la, lb = (face_latent(G, x, truncation) if isinstance(x, FaceId) else x for x in (a, b))
        raw = latent_walk(G, la, lb, frames)
    imgs = upscale(raw, scale)
    if fmt == "png":
        return encode_png(make_grid(imgs, nrow=frames, pad=2 * scale))
    return encode_gif(imgs, fps, back=True)
