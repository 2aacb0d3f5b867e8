"""The feature spaces the audit searches: pixels, dlib identity embeddings, FID Inception features.

Each space turns uint8 faces (N, S, S, 3) into vectors whose Euclidean distance is the space's
distance, records its protocol, and says whether a training face also counts mirrored (training
flips faces, so a memorised face may come out mirrored; the identity and Inception spaces are close
to mirror-invariant already, measured in docs/audit.md).

``pixel``
    RMS difference of the RGB values scaled to [0, 1] (0 = identical, 1 = black vs white); the
    nearest of a training face and its mirror image. Finds exact and near-exact copies.
``identity``
    dlib's face-recognition ResNet (see :mod:`.identity`): "is this the same person".
``inception``
    The FID Inception-v3 pool3 features (:mod:`fakefacegen.metrics.features`), pytorch-fid resize.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

SPACES = ("pixel", "identity", "inception")
DEFAULT_SPACES = ("pixel", "identity")


class PixelSpace:
    """Pixels as vectors, scaled so that the Euclidean distance is the RMS difference in [0, 1]."""

    name = "pixel"
    mirror = True
    lazy = True  # vectors are made chunk by chunk from the uint8 images (12,288-d at 64 px)

    @property
    def protocol(self) -> dict[str, Any]:
        return {
            "space": "pixel",
            "distance": "RMS difference of RGB values in [0, 1]",
            "mirror": "nearest of each training face and its left-right mirror image",
        }

    @staticmethod
    def transform(rows: np.ndarray, mirrored: bool = False) -> np.ndarray:
        if mirrored:
            rows = rows[:, :, ::-1]
        flat = rows.reshape(len(rows), -1).astype(np.float32)
        return flat * np.float32(1.0 / (255.0 * math.sqrt(flat.shape[1])))

    def embed(self, images: np.ndarray, progress: Callable[[int], Any] | None = None) -> np.ndarray:
        return np.asarray(images)  # kept as uint8; :meth:`transform` makes vectors during the search


class InceptionSpace:
    """FID Inception pool3 features (2048-d), through the project's :class:`FeatureExtractor`."""

    name = "inception"
    mirror = False
    lazy = False

    def __init__(self, inception: str | None = None, device: str = "cpu"):
        from ..metrics.features import FeatureExtractor

        self.extractor = FeatureExtractor(inception=inception, device=device, batch_size=32)

    @property
    def protocol(self) -> dict[str, Any]:
        return {"space": "inception", "distance": "euclidean", **self.extractor.protocol}

    def embed(self, images: np.ndarray, progress: Callable[[int], Any] | None = None) -> np.ndarray:
        feats = self.extractor(images)
        if progress is not None:
            progress(len(images))
        return np.asarray(feats, dtype=np.float32)


def make_space(name: str, *, inception: str | None = None, device: str = "cpu") -> Any:
    """A space object by name; raises ValueError naming ``--spaces`` for an unknown one."""
    if name == "pixel":
        return PixelSpace()
    if name == "identity":
        from .identity import IdentityEmbedder

        return IdentityEmbedder()
    if name == "inception":
        return InceptionSpace(inception, device)
    raise ValueError(f"--spaces: unknown space {name!r}; choose from {', '.join(SPACES)}")


def parse_spaces(text: str | list[str] | tuple[str, ...]) -> list[str]:
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    if not names:
        raise ValueError(f"--spaces: give at least one of {', '.join(SPACES)}")
    bad = [s for s in names if s not in SPACES]
    if bad:
        raise ValueError(f"--spaces: unknown space {bad[0]!r}; choose from {', '.join(SPACES)}")
    return list(dict.fromkeys(names))
