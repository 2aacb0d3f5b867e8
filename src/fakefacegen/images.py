"""Tensor <-> uint8 image conversion, PNG grids, and animations (GIF/WebP)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_save


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Float images (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3), rounded, clamped."""
    x = (x.detach().float().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2, fill: int = 0) -> np.ndarray:
    """uint8 (N, H, W, 3) -> one uint8 (rows*(H+pad)+pad, cols*(W+pad)+pad, 3) image, row-major."""
    n, h, w, c = images.shape
    cols = nrow or max(1, int(math.ceil(math.sqrt(n))))
    rows = int(math.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), fill, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def save_png(image: np.ndarray, path: str | Path) -> None:
    """Write a uint8 (H, W, 3) array as PNG, atomically (temp file + rename)."""
    atomic_save(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def save_grid(images: np.ndarray, path: str | Path, nrow: int | None = None) -> None:
    save_png(make_grid(images, nrow), path)


def upscale(images: np.ndarray, scale: int) -> np.ndarray:
    """uint8 (N, H, W, 3) enlarged ``scale`` times (LANCZOS); unchanged for scale 1."""
    if scale == 1:
        return images
    h, w = images.shape[1:3]
    return np.stack(
        [np.asarray(Image.fromarray(a).resize((w * scale, h * scale), Image.Resampling.LANCZOS)) for a in images]
    )


ANIMATION_FORMATS = ("gif", "webp")


def encode_animation(frames: np.ndarray, fmt: str = "gif", *, fps: float = 12.0, loop: bool = True) -> bytes:
    """uint8 (F, H, W, 3) frames -> the bytes of an animated GIF or lossless WebP.

    GIF frames each get their own 256-colour palette from Pillow's fast octree quantiser without
    dithering: 20-250x faster than the median cut Pillow uses by default (measured: 33 s -> 0.3 s
    for 46 frames of 256 px), for a mean error of about 3 instead of 2 levels of 255. WebP is
    lossless: lossy WebP's 4:2:0 chroma blurs small faces visibly. ``loop``: repeat endlessly."""
    fmt = fmt.lower()
    if fmt not in ANIMATION_FORMATS:
        raise ValueError(f"animation format must be one of {', '.join(ANIMATION_FORMATS)}, got {fmt!r}")
    if not fps > 0:
        raise ValueError(f"--fps must be > 0, got {fps}")
    if fmt == "gif":
        ims = [
            Image.fromarray(f).quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE) for f in frames
        ]
        kw: dict[str, Any] = {"optimize": False, "disposal": 1}  # disposal 1: nothing stale between full frames
    else:
        ims = [Image.fromarray(f) for f in frames]
        kw = {"lossless": True, "quality": 80, "method": 4}
    if loop:
        kw["loop"] = 0  # a missing loop extension/value means play once
    buf = io.BytesIO()
    ims[0].save(buf, format=fmt.upper(), save_all=True, append_images=ims[1:], duration=max(1, round(1000 / fps)), **kw)
    return buf.getvalue()
