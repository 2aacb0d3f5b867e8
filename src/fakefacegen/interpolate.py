"""Latent walks: spherical interpolation between the faces of several seeds, as an animation and a grid.

Seed ``s`` stands for image 0 of ``G.sample(n, s)``, i.e. the noise ``noise(1, z_dim, s)``, so the
walk's endpoint frames are exactly the faces ``G.sample(1, s)`` shows. Between two endpoints the
noise moves along a great circle (slerp), not a straight line: a straight line between two
Gaussian vectors passes close to the origin, where the generator rarely saw noise during
training, and the faces midway fade towards a washed-out average.

    from fakefacegen import load_generator
    from fakefacegen.interpolate import interpolate
    frames = interpolate(load_generator(), seeds=[1, 2, 3], frames=16)   # uint8 (31, 64, 64, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import atomic_save

if TYPE_CHECKING:  # torch is imported lazily so that `fakefacegen --help` stays fast
    import torch

    from .generate import LoadedGenerator

FORMATS = ("gif", "webp")


def slerp(
    a: torch.Tensor, b: torch.Tensor, t: float | Sequence[float] | torch.Tensor, *, eps: float = 1e-6
) -> torch.Tensor:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1) along the last dimension.

    The direction moves along the great circle at constant angular speed and the norm moves
    linearly from |a| to |b| (for equal norms this is the classic slerp of Shoemake / White 2016).
    ``a`` and ``b`` are (..., D); ``t`` is a number or a tensor broadcast against ``a[..., :1]``,
    so 1-D ``a``, ``b`` with ``t`` of shape (T,) give (T, D). t=0 and t=1 return ``a`` and ``b``
    exactly. Nearly parallel or anti-parallel vectors (angle within ~``eps`` of 0 or pi) and zero
    vectors, whose great circle is undefined, fall back to linear interpolation.
    """
    import torch

    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape[-1:] != b.shape[-1:]:
        raise ValueError(f"slerp: vectors of different lengths {tuple(a.shape)} and {tuple(b.shape)}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    # float64 inside: the angle of nearly parallel vectors is ill-conditioned in float32.
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    t64 = torch.as_tensor(t, dtype=torch.float64)[..., None]
    na, nb = a64.norm(dim=-1, keepdim=True), b64.norm(dim=-1, keepdim=True)
    ua, ub = a64 / na.clamp_min(1e-300), b64 / nb.clamp_min(1e-300)
    cos = (ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    degenerate = (sin < eps) | (na == 0) | (nb == 0)
    safe_sin = torch.where(degenerate, torch.ones_like(sin), sin)
    direction = (torch.sin((1 - t64) * omega) * ua + torch.sin(t64 * omega) * ub) / safe_sin
    out = ((1 - t64) * na + t64 * nb) * direction
    out = torch.where(degenerate, (1 - t64) * a64 + t64 * b64, out)
    # Exact endpoints, so an endpoint frame is bit-identical to the seed's own sample.
    out = torch.where(t64 == 0, a64.expand_as(out), out)
    out = torch.where(t64 == 1, b64.expand_as(out), out)
    return out.to(dtype)


def _shown(text: str, limit: int = 60) -> str:
    """``text`` quoted for an error line, cut to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_seeds(text: str) -> list[int | Path]:
    """'1,2,3' -> [1, 2, 3]; an item ending in .npy is a saved latent (``fakefacegen project``'s
    NAME-latent.npy): 'me-latent.npy,5' -> [Path('me-latent.npy'), 5]. A one-line ValueError naming
    --seeds otherwise."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    out: list[int | Path] = []
    for p in parts:
        if p.lower().endswith(".npy"):
            out.append(Path(p))
            continue
        try:
            out.append(int(p))
        except ValueError:
            raise ValueError(
                "--seeds must be comma-separated seeds or latent files, such as 1,2,3 or me-latent.npy,5, "
                f"got {_shown(text)}"
            ) from None
    if len(out) < 2:
        raise ValueError(f"--seeds needs at least two seeds to walk between, got {_shown(text)}")
    return out


def _check(endpoints: Sequence[object] | torch.Tensor, frames: int) -> None:
    if len(endpoints) < 2:
        raise ValueError(f"seeds: need at least two seeds to walk between, got {list(endpoints)}")
    if int(frames) < 2:
        raise ValueError(f"frames (--frames) must be >= 2 (both endpoints of a segment), got {frames}")


def walk_latents(
    z_dim: int, seeds: Sequence[int], frames: int, *, truncation: float | None = None, loop: bool = False
) -> torch.Tensor:
    """Noise of the walk, (F, z_dim): ``frames`` points per segment, shared endpoints not repeated.

    Segments go seed[0] -> seed[1] -> ... (and back to seed[0] with ``loop``). Without ``loop``,
    F = segments * (frames - 1) + 1 and row k * (frames - 1) is seed k's noise; with ``loop`` the
    closing frame (equal to the first) is left out, F = segments * (frames - 1), so the animation
    repeats without a stutter.
    """
    import torch

    from .generate import noise

    _check(seeds, frames)
    seeds = [int(s) for s in seeds]
    ends = torch.cat([noise(1, z_dim, s, truncation=truncation) for s in seeds])
    if loop:
        ends = torch.cat([ends, ends[:1]])
    t = torch.linspace(0, 1, frames, dtype=torch.float64)[:-1]
    rows = [slerp(ends[i], ends[i + 1], t) for i in range(len(ends) - 1)]
    if not loop:
        rows.append(ends[-1:])
    return torch.cat(rows).to(torch.float32)


def endpoint_codes(
    G: LoadedGenerator,
    endpoints: Sequence[int | Path],
    *,
    truncation: float | None = None,
    psi: float = 1.0,
) -> torch.Tensor:
    """The walk's endpoints in the model's edit space, (K, D), or W+ (K, blocks, D) for the style family
    when any endpoint is a saved W+ latent (then each seed's w is repeated for every block). A seed is
    its first face, truncated as ``G.sample`` would; a ``.npy`` file must hold one latent."""
    import torch

    from .latents import read_latent_file

    rows = []
    for e in endpoints:
        if isinstance(e, Path):
            lat = G.checked_latents(read_latent_file(e, "--seeds"), f"--seeds {e}")
            if len(lat) != 1:
                raise ValueError(f"--seeds {e}: holds {len(lat)} latents; a walk's endpoint is one latent")
            rows.append(lat)
        else:
            rows.append(G.codes(1, int(e), psi=psi, truncation=truncation))
    if any(r.dim() == 3 for r in rows):
        blocks = next(r.shape[1] for r in rows if r.dim() == 3)
        rows = [r if r.dim() == 3 else r[:, None].expand(-1, blocks, -1) for r in rows]
    return torch.cat(rows)


def walk_codes(ends: torch.Tensor, frames: int, *, spherical: bool, loop: bool = False) -> torch.Tensor:
    """Latents of a walk through ``ends`` (K, ...), frames as :func:`walk_latents` orders them:
    spherical (z, Gaussian) or straight (W, where StyleGAN's walks are linear)."""
    import torch

    _check(ends, frames)
    if loop:
        ends = torch.cat([ends, ends[:1]])
    t = torch.linspace(0, 1, frames, dtype=torch.float64)[:-1]
    rows = []
    for a, b in zip(ends[:-1], ends[1:]):
        if spherical:
            rows.append(slerp(a, b, t))
        else:
            tt = t.reshape(-1, *([1] * a.dim())).to(a.dtype)
            rows.append(a + tt * (b - a))
    if not loop:
        rows.append(ends[-1:])
    return torch.cat(rows).to(torch.float32)


def interpolate(
    G: LoadedGenerator,
    seeds: Sequence[int | Path],
    frames: int,
    truncation: float | None = None,
    *,
    psi: float = 1.0,
    loop: bool = False,
    batch_size: int = 256,
) -> np.ndarray:
    """The walk's images, uint8 (F, R, R, 3); see :func:`walk_latents` for F and the frame order.

    Endpoint frames equal ``G.sample(1, seed, truncation=truncation)[0]`` of each seed. With a saved
    latent among ``seeds`` (a ``.npy`` path) the walk runs in the model's edit space: straight in W
    (W+) for the style family, spherical in z for the DCGAN; its endpoint frames are the latent's face.
    """
    _check(seeds, frames)
    ints = [s for s in seeds if not isinstance(s, Path)]
    if len(ints) == len(seeds):
        z = walk_latents(G.z_dim, ints, frames, truncation=truncation, loop=loop)
        return G.synthesize(z, batch_size, psi=psi)
    ends = endpoint_codes(G, seeds, truncation=truncation, psi=psi)
    return G.render(walk_codes(ends, frames, spherical=G.edit_space == "z", loop=loop), batch_size)


def segment_rows(walk: np.ndarray, frames: int, loop: bool = False) -> np.ndarray:
    """Walk frames (F, H, W, 3) -> (segments, frames, H, W, 3), each row with both of its endpoints."""
    seq = np.concatenate([walk, walk[:1]]) if loop else walk
    if (len(seq) - 1) % (frames - 1):
        raise ValueError(f"{len(walk)} walk frames do not split into segments of {frames} frames")
    segs = (len(seq) - 1) // (frames - 1)
    return np.stack([seq[s * (frames - 1) : s * (frames - 1) + frames] for s in range(segs)])


def save_animation(
    frames: np.ndarray, path: str | Path, *, fps: float = 12.0, loop: bool = True, fmt: str | None = None
) -> Path:
    """Write uint8 (F, H, W, 3) frames as an animated GIF or WebP (from ``fmt`` or the suffix), atomically."""
    from .images import encode_animation

    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise ValueError(f"{path}: animation format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    data = encode_animation(frames, fmt, fps=fps, loop=loop)

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return atomic_save(path, write)


def interpolate_to_dir(
    source: str | Path | None,
    out: str | Path,
    seeds: Sequence[int | Path],
    *,
    frames: int = 16,
    truncation: float | None = None,
    psi: float = 1.0,
    loop: bool = False,
    fmt: str = "gif",
    fps: float = 12.0,
    scale: int = 1,
    device: str = "cpu",
    which: str = "latest",
) -> dict[str, Path]:
    """Write ``out/walk.<fmt>`` (the animation) and ``out/grid.png`` (one row per segment)."""
    from .generate import load_generator
    from .images import make_grid, save_png, upscale

    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if int(scale) < 1:
        raise ValueError(f"--scale must be a positive integer, got {scale}")
    _check(seeds, frames)
    from .generate import check_psi

    check_psi(psi)
    G = load_generator(source, device=device, which=which)
    walk = interpolate(G, seeds, frames, truncation, psi=psi, loop=loop)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    anim = save_animation(upscale(walk, int(scale)), out / f"walk.{fmt}", fps=fps, fmt=fmt)
    rows = segment_rows(walk, frames, loop)
    grid = out / "grid.png"
    save_png(make_grid(upscale(rows.reshape(-1, *rows.shape[2:]), int(scale)), nrow=frames), grid)
    return {"animation": anim, "grid": grid}
