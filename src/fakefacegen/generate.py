"""Load a trained generator (bundled model, run directory, checkpoint or safetensors) and sample faces.

Image ``i`` of seed ``s`` is made from noise drawn by a generator seeded with (s, i), so it is the
same whatever ``n`` or the batch size, and G runs in eval mode (BatchNorm from running statistics),
so each image depends on its own noise only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, load_generator_file
from .config import ConfigError, ModelConfig
from .generator_network import GeneratorNetwork
from .images import make_grid, save_png, to_uint8
from .models import build_generator
from .randomness import STREAM_SAMPLE, step_generator
from .rundir import RunDir

BUNDLED = "celeba64.safetensors"


def bundled_model_path() -> Path:
    return Path(str(resources.files("fakefacegen").joinpath("assets").joinpath(BUNDLED)))


def noise(n: int, z_dim: int, seed: int, *, truncation: float | None = None, start: int = 0) -> torch.Tensor:
    """(n, z_dim) standard normal noise; row i depends only on (seed, start + i).

    With ``truncation`` t, values with |z| > t are redrawn (a truncated normal): samples move
    towards the average face, trading diversity for quality.
    """
    if truncation is not None and not truncation > 0:
        raise ValueError(f"truncation must be > 0, got {truncation}")
    rows = []
    for i in range(start, start + n):
        rng = step_generator(seed, i, STREAM_SAMPLE)
        z = torch.randn(z_dim, generator=rng)
        if truncation is not None:
            bad = z.abs() > truncation
            while bad.any():
                z[bad] = torch.randn(int(bad.sum()), generator=rng)
                bad = z.abs() > truncation
        rows.append(z)
    return torch.stack(rows) if rows else torch.empty(0, z_dim)


@dataclass
class LoadedGenerator:
    """A generator ready to sample: ``G.sample(16, seed=0)`` -> uint8 (16, R, R, 3)."""

    net: GeneratorNetwork
    """The network: a DCGAN ``models.DCGANGenerator`` or a ``stylegan.StyleGenerator``; ``net(z, psi)``."""
    source: str
    meta: dict[str, Any] = field(default_factory=dict)
    _directions: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def resolution(self) -> int:
        return self.net.resolution

    @property
    def z_dim(self) -> int:
        return self.net.z_dim

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def family(self) -> str:
        """'dcgan' or 'style' (see ModelConfig.arch)."""
        return self.net.cfg.family

    @torch.no_grad()
    def synthesize(self, z: torch.Tensor, batch_size: int = 256, *, psi: float = 1.0) -> np.ndarray:
        """uint8 (N, R, R, 3) images for the given noise rows; ``psi`` < 1 truncates towards the
        average latent (in W for the style family, towards z = 0 for the DCGAN)."""
        check_psi(psi)
        out = [to_uint8(self.net(zb.to(self.device), psi=psi)) for zb in z.split(batch_size)]
        return np.concatenate(out) if out else np.empty((0, self.resolution, self.resolution, 3), np.uint8)

    @torch.no_grad()
    def synthesize_latents(self, latents: np.ndarray | torch.Tensor, source: str = "latent") -> np.ndarray:
        """uint8 (N, R, R, 3) images from saved latents, e.g. ``fakefacegen project``'s NAME-latent.npy:
        z, (z_dim,) or (N, z_dim), for the DCGAN; W+, (blocks, w_dim) or (N, blocks, w_dim), for the style
        family. A latent of another shape is a ValueError naming ``source`` and the shapes that fit."""
        return self.render(self.checked_latents(latents, source))

    def checked_latents(self, latents: np.ndarray | torch.Tensor, source: str = "latent") -> torch.Tensor:
        """Saved latents (see :meth:`synthesize_latents`) as a batch on this model's device: z (N, z_dim)
        or W+ (N, blocks, w_dim); a ValueError naming ``source`` and the shapes that fit otherwise."""
        lat = torch.as_tensor(np.asarray(latents, dtype=np.float32))
        net: Any = self.net
        if self.family == "style":
            want = (len(net.blocks), self.z_dim)
            ok = lat.dim() in (2, 3) and tuple(lat.shape[-2:]) == want
            what = f"W+ {want} or (N, {want[0]}, {want[1]})"
        else:
            ok = lat.dim() in (1, 2) and tuple(lat.shape[-1:]) == (self.z_dim,)
            what = f"z ({self.z_dim},) or (N, {self.z_dim})"
        if not ok or not torch.isfinite(lat).all():
            problem = "has NaN/Inf values" if ok else f"has shape {tuple(lat.shape)}"
            raise ValueError(f"{source}: the latent {problem}; this {self.family} model takes {what}")
        single = lat.dim() == (2 if self.family == "style" else 1)
        return (lat[None] if single else lat).to(self.device)

    @property
    def edit_space(self) -> str:
        """Where attribute edits happen: 'w' (the mapping network's output) for the style family, 'z' otherwise."""
        return "w" if self.family == "style" else "z"

    @torch.no_grad()
    def codes(
        self, n: int, seed: int = 0, *, start: int = 0, psi: float = 1.0, truncation: float | None = None
    ) -> torch.Tensor:
        """(n, D) latents in the edit space of faces ``start``.. ``start + n - 1`` of ``seed``, truncated as
        :meth:`sample` truncates: ``render(codes(...))`` gives the faces ``sample(...)`` gives."""
        check_psi(psi)
        z = noise(n, self.z_dim, seed, truncation=truncation, start=start).to(self.device)
        if self.family != "style":
            return z * psi if psi != 1.0 else z
        net: Any = self.net
        w = net.mapping(z)
        return net.w_avg.float().lerp(w, psi) if psi != 1.0 else w

    @torch.no_grad()
    def render(self, codes: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """uint8 (N, R, R, 3) faces of latents in the edit space: (N, D), or W+ (N, blocks, D) for the style family."""
        net: Any = self.net
        run = net.synthesis if self.family == "style" else net
        out = [to_uint8(run(c.to(self.device))) for c in codes.split(batch_size)]
        return np.concatenate(out) if out else np.empty((0, self.resolution, self.resolution, 3), np.uint8)

    def directions(self, path: str | Path | None = None) -> Any:
        """This model's attribute directions (:class:`fakefacegen.directions.Directions`), from ``path`` or
        from ``NAME-directions.json`` next to the model file; a file made for other weights is refused."""
        from .directions import Directions, DirectionsError, directions_path, weights_hash

        p = Path(path) if path is not None else directions_path(self.source)
        if self._directions is not None and self._directions[0] == p:
            return self._directions[1]
        d = Directions.load(p)
        want = (d.info.get("model") or {}).get("weights_sha1")
        if want != weights_hash(self):
            raise DirectionsError(
                f"{p}: these directions were found for other weights ({want and str(want)[:12]}) than {self.source}; "
                f"make them with `fakefacegen directions {self.source}`"
            )
        if d.space != self.edit_space or d.dim != self.z_dim:
            raise DirectionsError(f"{p}: directions in {d.space} ({d.dim}-d), this model edits in {self.edit_space}")
        self._directions = (p, d)
        return d

    def edit(
        self,
        seed: int = 0,
        index: int = 0,
        attrs: dict[str, float] | None = None,
        *,
        keep: tuple[str, ...] | list[str] = (),
        psi: float = 1.0,
        truncation: float | None = None,
        latent: np.ndarray | torch.Tensor | None = None,
        directions: str | Path | None = None,
    ) -> np.ndarray:
        """uint8 (R, R, 3): face ``index`` of ``seed`` (or a saved ``latent``, e.g. project's NAME-latent.npy)
        with each attribute of ``attrs`` moved by its amount, in standard deviations of the generated
        latents along its direction (``{"Smiling": 2.0}``; negative = less), keeping ``keep`` unchanged."""
        from .editing import edit_latent, latent_for

        base = latent_for(self, seed=seed, index=index, psi=psi, truncation=truncation, latent=latent)
        return self.render(edit_latent(self.directions(directions), base, attrs or {}, keep))[0]

    def sample(
        self,
        n: int,
        seed: int = 0,
        *,
        truncation: float | None = None,
        psi: float = 1.0,
        batch_size: int = 256,
        as_pil: bool = False,
        start: int = 0,
    ):
        """``n`` faces from ``seed``: uint8 array (n, R, R, 3), or a list of PIL images.

        ``truncation`` redraws noise values beyond it (a truncated normal in z); ``psi`` moves each
        latent towards the average one (StyleGAN's truncation trick; psi = 1 is untruncated)."""
        imgs = self.synthesize(noise(n, self.z_dim, seed, truncation=truncation, start=start), batch_size, psi=psi)
        if as_pil:
            from PIL import Image

            return [Image.fromarray(a) for a in imgs]
        return imgs

    __call__ = sample


def check_psi(psi: float) -> None:
    """psi must be in [0, 1]: 1 is untruncated sampling, 0 the average face."""
    if not 0.0 <= psi <= 1.0:
        raise ValueError(f"--psi must be in [0, 1] (1 = no truncation), got {psi}")


def _from_state(state: dict[str, torch.Tensor], model: dict[str, Any], source: str) -> GeneratorNetwork:
    try:
        mc = ModelConfig(**model)
        mc.validate()
    except (TypeError, ConfigError) as e:
        raise CheckpointError(f"{source}: the stored model config is invalid ({e})") from None
    g = build_generator(mc)
    try:
        g.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(
            f"{source}: weights do not fit a {mc.resolution}px {mc.family} generator of width "
            f"{mc.width} ({str(e).splitlines()[0][:160]})"
        ) from None
    from .stylegan import StyleGenerator

    if isinstance(g, StyleGenerator):  # the average w of exactly these weights (a checkpoint's EMA copy too)
        g.compute_w_avg()
    return g


def load_generator(
    source: str | Path | None = None, *, device: str | torch.device = "cpu", which: str = "latest"
) -> LoadedGenerator:
    """A generator from the bundled model (``None``), a run directory, a .pt checkpoint or a .safetensors file.

    From a run directory or checkpoint, the EMA copy of G is used when the run kept one.
    ``which`` picks a run directory's 'latest' or 'best' checkpoint.
    """
    if source is None:
        path = bundled_model_path()
        if not path.is_file():
            raise CheckpointError(f"{path}: no bundled model is installed; pass a run directory or checkpoint")
    else:
        path = Path(source)
    meta: dict[str, Any] = {}
    if path.is_dir():
        run = RunDir(path)
        if which == "best" and run.best_checkpoint.is_file():
            ck = run.best_checkpoint
        else:
            ck = latest_checkpoint(path)
        if ck is None:
            if run.generator.is_file():
                return load_generator(run.generator, device=device)
            raise CheckpointError(f"{path}: no checkpoint in this run directory (checkpoints/ckpt-*.pt)")
        path = ck
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.suffix == ".safetensors":
        state, model, meta = load_generator_file(path)
        g = _from_state(state, model, str(path))
    else:
        ck = load_checkpoint(path)
        use_ema = ck.get("G_ema") is not None
        g = _from_state(ck["G_ema"] if use_ema else ck["G"], ck["config"]["model"], str(path))
        if use_ema:
            # The EMA copy's BatchNorm statistics were not tracked; estimate them for its weights.
            from .models import recalibrate_batchnorm

            recalibrate_batchnorm(g)
        meta = {"step": ck.get("step"), "images_seen": ck.get("images_seen"), "ema": use_ema}
    g = g.to(device).eval().requires_grad_(False)
    return LoadedGenerator(g, str(path), meta)


def generate_images(
    source: str | Path | None,
    out: str | Path,
    *,
    n: int = 64,
    seed: int = 0,
    truncation: float | None = None,
    psi: float = 1.0,
    grid: bool = True,
    pngs: bool = True,
    device: str = "cpu",
    batch_size: int = 256,
    progress: bool = False,
) -> list[Path]:
    """Write ``n`` faces as ``out/seedS-IIIII.png`` and/or ``out/grid.png``; returns the files written."""
    if n <= 0:
        raise ValueError(f"--n must be > 0, got {n}")
    if batch_size <= 0:
        raise ValueError(f"--batch-size must be > 0, got {batch_size}")
    if truncation is not None and not truncation > 0:  # before anything is loaded or written
        raise ValueError(f"--truncation must be > 0, got {truncation}")
    check_psi(psi)
    G = load_generator(source, device=device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    grid_imgs: list[np.ndarray] = []
    it = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, unit="batch", desc="generate")
    for start in it:
        imgs = G.sample(min(batch_size, n - start), seed, truncation=truncation, psi=psi, start=start)
        if pngs:
            for j, img in enumerate(imgs):
                p = out / f"seed{seed}-{start + j:05d}.png"
                save_png(img, p)
                written.append(p)
        if grid and start < 256:
            grid_imgs.append(imgs[: 256 - start])
    if grid:
        p = out / "grid.png"
        save_png(make_grid(np.concatenate(grid_imgs)), p)
        written.append(p)
    return written
