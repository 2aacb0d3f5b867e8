"""Project a photo into a generator: find the latent whose generated face is closest to the photo.

``fakefacegen project PHOTO... --out DIR`` crops and resizes each photo as ``prepare`` does (centre
square, Lanczos), then optimises a latent with Adam on a pixel loss plus a perceptual loss, all photos
in one batch, seeded. The latent space is W+ (one w per resolution block) for the style family, z
for the DCGAN (kept near the sphere where its noise lives). The start is, per photo, the best of
``candidates`` seeded random latents. For each photo it writes ``NAME-projection.png``,
``NAME-latent.npy`` and ``NAME-side.png`` (photo | projection), and ``projection.json`` with the
distances and settings.

The perceptual loss uses the early layers of the FID Inception-v3 the project already verifies and
caches (:mod:`fakefacegen.metrics.inception`): at three depths (61, 28 and 13 px maps for a 128 px
input) each position's channel vector is unit-normalised and the squared differences are averaged,
as LPIPS does with VGG but without its learned weights. Nothing is downloaded at run time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

PERCEPTUAL_SIZE = 128
PERCEPTUAL_TAPS = (3, 6, 10)  # after conv_2, conv_4 and mixed_2 of the Inception's layers


class ProjectError(ValueError):
    """A photo that cannot be projected, or a bad setting (one-line message naming it)."""


def load_photo(path: str | Path, size: int) -> np.ndarray:
    """A photo file as a uint8 (size, size, 3) face crop, as ``prepare`` makes one; ProjectError otherwise."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ProjectError(f"photo {p}: cannot read it ({e.strerror or e})") from None
    return decode_photo(data, size, f"photo {p}")


def decode_photo(data: bytes, size: int, name: str = "photo", max_pixels: int | None = None) -> np.ndarray:
    """A photo's bytes (a file's or an upload's, decoded in memory) as a uint8 (size, size, 3) face crop,
    centre-cropped and resized as ``prepare`` does; a one-line ProjectError starting with ``name``
    when it is not a usable colour photo (not an image, corrupt, tiny, over ``max_pixels``, grayscale)."""
    from PIL import Image

    from .prepare import DEFAULT_MAX_PIXELS, default_min_side
    from .prepare.decode import decode_image
    from .prepare.errors import Skip

    cfg = {
        "size": size,
        "min_side": default_min_side(size),
        "max_pixels": DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
        "draft": True,
        "resample": Image.Resampling.LANCZOS,
    }
    try:
        arr, from_mode, _, _ = decode_image(data, cfg)
    except Skip as e:
        raise ProjectError(f"{name}: {e}") from None
    if from_mode in ("L", "LA", "I", "I;16", "1", "F") or bool((arr == arr[..., :1]).all()):
        raise ProjectError(f"{name}: grayscale; the model makes colour faces, give a colour photo")
    return arr


def check_face(face: np.ndarray, name: str) -> bool | None:
    """Whether dlib's face detector finds a face in the crop (None when dlib is not installed);
    raises ProjectError when it finds none."""
    from .audit import identity

    if not identity.available():
        return None
    import dlib

    if len(dlib.get_frontal_face_detector()(identity.upsample(face), 1)) == 0:
        raise ProjectError(
            f"photo {name}: no face found in its centre square crop (dlib's detector); "
            "give a photo with one face, roughly centred"
        )
    return True


class Perceptual(torch.nn.Module):
    """Early-layer Inception features of images in [-1, 1] (see the module docstring)."""

    def __init__(self, inception: str | None = None):
        super().__init__()
        from .metrics.inception import load_inception

        net: Any = load_inception(inception).net  # TorchScript: the Inception's blocks in order
        layers = list(net.layers.children())
        self.layers = layers[: max(PERCEPTUAL_TAPS) + 1]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.interpolate(x, size=(PERCEPTUAL_SIZE, PERCEPTUAL_SIZE), mode="bilinear", align_corners=False)
        out = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in PERCEPTUAL_TAPS:
                out.append(x / (x.norm(dim=1, keepdim=True) + 1e-8))
        return out

    def distance(self, a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
        """Per image: the mean over taps of the mean squared difference of unit channel vectors."""
        return torch.stack([((fa - fb) ** 2).sum(1).mean((1, 2)) for fa, fb in zip(a, b)]).mean(0)


@dataclass
class Projection:
    latents: np.ndarray  # (N, z_dim) for 'z', (N, blocks, w_dim) for 'w+'
    space: str
    images: np.ndarray  # uint8 (N, R, R, 3)
    pixel_rms: np.ndarray  # RMS difference in [0, 1] to the target
    perceptual: np.ndarray | None
    seconds: float


def _synthesize(G: Any, latent: torch.Tensor, space: str) -> torch.Tensor:
    return G.net(latent) if space == "z" else G.net.synthesis(latent)


def _start(G: Any, n: int, candidates: int, seed: int, space: str) -> torch.Tensor:
    from .generate import noise

    z = noise(candidates, G.z_dim, seed)
    if space == "z":
        return z
    with torch.no_grad():
        w = G.net.mapping(z)
    return w[:, None, :].repeat(1, len(G.net.blocks), 1)


def project(
    G: Any,
    targets: np.ndarray,
    *,
    steps: int = 300,
    lr: float = 0.05,
    perceptual_weight: float = 1.0,
    pixel_weight: float = 1.0,
    candidates: int = 32,
    seed: int = 0,
    inception: str | None = None,
    progress: Callable[[int, float], Any] | None = None,
) -> Projection:
    """Latents whose faces are closest to ``targets`` (uint8 (N, R, R, 3) at the model's resolution)."""
    if steps < 0:
        raise ProjectError(f"--steps must be >= 0, got {steps}")
    if candidates < 1:
        raise ProjectError(f"--candidates must be >= 1, got {candidates}")
    if targets.shape[1:] != (G.resolution, G.resolution, 3):
        raise ProjectError(
            f"targets are {targets.shape[1:]}, the model makes ({G.resolution}, {G.resolution}, 3) faces"
        )
    t0 = time.perf_counter()
    space = "w+" if G.family == "style" else "z"
    torch.manual_seed(seed)
    target = torch.from_numpy(np.ascontiguousarray(targets)).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(G.device)
    perc = Perceptual(inception).to(G.device) if perceptual_weight > 0 else None
    with torch.no_grad():
        t_feats = perc.features(target) if perc is not None else None

    def losses(latent: torch.Tensor, tgt: torch.Tensor, tf: list[torch.Tensor] | None) -> torch.Tensor:
        img = _synthesize(G, latent, space)
        loss = pixel_weight * ((img - tgt) ** 2).mean((1, 2, 3))
        if perc is not None:
            assert tf is not None
            loss = loss + perceptual_weight * perc.distance(perc.features(img), tf)
        if space == "z":  # keep z near the sphere of radius sqrt(z_dim), where N(0, I) noise lives
            loss = loss + 0.01 * (latent.pow(2).mean(1) - 1.0) ** 2
        return loss

    cand = _start(G, len(targets), candidates, seed, space).to(G.device)
    with torch.no_grad():  # per photo, the best starting candidate
        scores = torch.stack(
            [losses(cand[k : k + 1].expand(len(targets), *cand.shape[1:]), target, t_feats) for k in range(len(cand))],
            1,
        )
    latent = cand[scores.argmin(1)].clone().requires_grad_(True)
    opt = torch.optim.Adam([latent], lr=lr)
    for step in range(steps):
        for group in opt.param_groups:  # cosine decay of the step size
            group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        opt.zero_grad(set_to_none=True)
        loss = losses(latent, target, t_feats).sum()
        loss.backward()
        opt.step()
        if progress is not None:
            progress(step + 1, float(loss.detach()) / len(targets))
    with torch.no_grad():
        img = _synthesize(G, latent, space).clamp(-1, 1)
        rms = ((img - target) / 2).pow(2).mean((1, 2, 3)).sqrt()
        pd = perc.distance(perc.features(img), t_feats) if perc is not None and t_feats is not None else None
    from .images import to_uint8

    return Projection(
        latent.detach().cpu().numpy().astype(np.float32),
        space,
        to_uint8(img),
        rms.cpu().numpy().astype(float),
        pd.cpu().numpy().astype(float) if pd is not None else None,
        time.perf_counter() - t0,
    )


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to a temp file's name
        np.save(f, array)


def project_photos(
    model: Any,
    photos: list[str | Path],
    out: str | Path,
    *,
    check_faces: bool = True,
    progress: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """Load ``photos``, project them into ``model`` (as ``load_generator`` takes), write the files."""
    from .atomic import atomic_save, atomic_write_text
    from .audit.report import pair_image
    from .generate import load_generator
    from .images import save_png

    if not photos:
        raise ProjectError("project needs at least one PHOTO")
    G = model if hasattr(model, "net") else load_generator(model)
    faces, names = [], []
    for p in photos:
        face = load_photo(p, G.resolution)
        if check_faces:
            check_face(face, str(p))
        faces.append(face)
        names.append(Path(p).stem)
    if len(set(names)) != len(names):
        raise ProjectError("two photos have the same file name; their outputs would overwrite each other")
    targets = np.stack(faces)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=kwargs.get("steps", 300), desc="project", unit="step")

    def tick(step: int, loss: float) -> None:
        assert bar is not None
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    res = project(G, targets, progress=tick if bar else None, **kwargs)
    if bar is not None:
        bar.close()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, name in enumerate(names):
        save_png(res.images[i], out / f"{name}-projection.png")
        atomic_save(out / f"{name}-latent.npy", partial(_save_npy, array=res.latents[i]))
        save_png(pair_image(targets[i], res.images[i]), out / f"{name}-side.png")
        rows.append(
            {
                "photo": str(photos[i]),
                "name": name,
                "pixel_rms": float(res.pixel_rms[i]),
                "perceptual": None if res.perceptual is None else float(res.perceptual[i]),
            }
        )
    summary = {
        "model": G.source,
        "latent_space": res.space,
        "latent_shape": list(res.latents.shape[1:]),
        "seconds": res.seconds,
        "photos": rows,
        "settings": {k: v for k, v in kwargs.items() if k != "inception"},
        "protocol": "photo: centre square crop + Lanczos resize (as prepare); pixel_rms: RMS difference of "
        "RGB in [0, 1]; perceptual: Inception early layers, unit-normalised channels, mean squared "
        "difference (0 = identical)",
    }
    atomic_write_text(out / "projection.json", json.dumps(summary, indent=2) + "\n")
    return summary
