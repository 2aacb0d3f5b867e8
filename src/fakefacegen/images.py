"""Tensor <-> uint8 image conversion and PNG grids."""

from __future__ import annotations

import math
from pathlib import Path

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
