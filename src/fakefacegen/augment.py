"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to real and fake before D.

Every policy keeps the shape and (for translation and cutout) the value range, and is
differentiable with respect to the input, so G's gradient flows through it. Randomness comes from
the ``generator`` passed in, so a run is repeatable and resumable bit for bit.
"""

from __future__ import annotations

from typing import Protocol

import torch

Rows = tuple[int, int] | None
"""(first, total): ``x`` holds rows first..first+len(x) of a batch of ``total`` images. Every random
draw is made for all ``total`` images and sliced, so under torchrun each process augments its rows
exactly as a single process augments the whole batch (and no two processes repeat each other)."""


def _rand(n: int, rng: torch.Generator | None, x: torch.Tensor, rows: Rows = None) -> torch.Tensor:
    first, total = rows or (0, n)
    return torch.rand(total, 1, 1, 1, generator=rng)[first : first + n].to(device=x.device, dtype=x.dtype)


def _randint(
    low: int, high: int, n: int, rng: torch.Generator | None, x: torch.Tensor, rows: Rows = None
) -> torch.Tensor:
    first, total = rows or (0, n)
    return torch.randint(low, high, (total, 1, 1), generator=rng, device="cpu")[first : first + n].to(x.device)


def color(x: torch.Tensor, rng: torch.Generator | None = None, rows: Rows = None) -> torch.Tensor:
    """Random brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5) per image."""
    n = x.shape[0]
    x = x + (_rand(n, rng, x, rows) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(n, rng, x, rows) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    x = (x - mean) * (_rand(n, rng, x, rows) + 0.5) + mean
    return x


def translation(
    x: torch.Tensor, rng: torch.Generator | None = None, ratio: float = 0.125, rows: Rows = None
) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size, filling with zeros (mid-grey in [-1, 1])."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = _randint(-sh, sh + 1, n, rng, x, rows)
    tx = _randint(-sw, sw + 1, n, rng, x, rows)
    bi, gy, gx = torch.meshgrid(
        torch.arange(n, device=x.device),
        torch.arange(h, device=x.device),
        torch.arange(w, device=x.device),
        indexing="ij",
    )
    gy = torch.clamp(gy + ty + 1, 0, h + 1)
    gx = torch.clamp(gx + tx + 1, 0, w + 1)
    padded = torch.nn.functional.pad(x, [1, 1, 1, 1])
    # Gather (N, H, W) positions for every channel: index the padded tensor in NHWC order.
    return padded.permute(0, 2, 3, 1)[bi, gy, gx].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, rng: torch.Generator | None = None, ratio: float = 0.5, rows: Rows = None) -> torch.Tensor:
    """Zero a random square of ``ratio`` of the image side in each image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # Square centred at a uniformly random pixel; it may hang over the border, as in DiffAugment.
    y0 = _randint(0, h, n, rng, x, rows) - ch // 2
    x0 = _randint(0, w, n, rng, x, rows) - cw // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= y0) & (ys < y0 + ch) & (xs >= x0) & (xs < x0 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


class Policy(Protocol):
    """What a DiffAugment policy is: ``x`` and the random stream in, augmented ``x`` out."""

    def __call__(self, x: torch.Tensor, rng: torch.Generator | None = None, *, rows: Rows = None) -> torch.Tensor: ...


POLICIES: dict[str, Policy] = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: str, rng: torch.Generator | None = None, rows: Rows = None) -> torch.Tensor:
    """Apply the comma-separated policies in order; an empty policy returns ``x`` unchanged.

    ``rows=(first, total)``: ``x`` is one process's slice of a global batch of ``total`` (see Rows).
    """
    names = [p.strip() for p in policy.split(",") if p.strip()]
    if not names:
        return x
    # These element-wise ops and gathers run several times faster in NCHW than in channels_last on CPU.
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    x = x.contiguous()
    for name in names:
        x = POLICIES[name](x, rng, rows=rows)
    return x.contiguous(memory_format=torch.channels_last) if cl else x
