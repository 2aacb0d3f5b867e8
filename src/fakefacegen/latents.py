"""Saved latents: reading ``.npy`` files (``fakefacegen project``'s NAME-latent.npy) safely.

One home for what ``generate --latent``, ``edit --latent`` and ``interpolate`` (a ``.npy`` among
``--seeds``) accept: a plain numeric array (never a pickle), at most ``bounds.LATENT_FILE_MB`` on
disk; its shape is checked against the model by ``LoadedGenerator.checked_latents``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import bounds


def check_latent_file(path: str | Path, flag: str = "--latent") -> Path:
    """``path`` exists and is at most ``bounds.LATENT_FILE_MB`` MiB (checked before anything is read)."""
    p = Path(path)
    try:
        size = os.stat(p).st_size
    except OSError as e:
        raise ValueError(f"{flag} {p}: cannot read the latent ({e.strerror})") from None
    if size > bounds.LATENT_FILE_MB << 20:
        raise ValueError(f"{flag} {p}: a latent file must be at most {bounds.LATENT_FILE_MB} MiB ({size >> 20} MiB)")
    return p


def read_latent_file(path: str | Path, flag: str = "--latent") -> np.ndarray:
    """The array in a ``.npy`` latent file, read without pickle; a one-line ValueError naming the file."""
    p = check_latent_file(path, flag)
    try:
        return np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{flag} {p}: not a readable .npy latent ({str(e).splitlines()[0][:120]})") from None
