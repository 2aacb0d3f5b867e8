"""Synthetic prepared datasets for tests and benchmarks: smooth random images, written without `prepare`.

Plain Python (no pytest), so ``benchmarks/common.py`` makes its datasets with the same function.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fakefacegen.dataset_format import write_dataset


def smooth_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size, 3): 4x4 random colours per image, bilinearly upsampled (face-like smoothness)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n, 4, 4, 3)).astype(np.float32)
    t = torch.from_numpy(base).permute(0, 3, 1, 2)
    imgs = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return imgs.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()


def make_dataset_dir(path: Path, n: int = 64, size: int = 32, seed: int = 0) -> Path:
    """A prepared-format dataset of :func:`smooth_images` (what `prepare` writes), without prepare."""
    write_dataset(
        path, smooth_images(n, size, seed), source="synthetic", crop="center", filter="none", skipped=[], files_seen=n
    )
    return path
