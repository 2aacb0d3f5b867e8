"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to real and fake before D.

Every policy keeps the shape and (for translation and cutout) the value range, and is
differentiable with respect to the input, so G's gradient flows through it. Randomness comes from
the ``generator`` passed in, so a run is repeatable and resumable bit for bit.
"""

from __future__ import annotations

import torch


def _rand(n: int, g: torch.Generator | None, x: torch.Tensor) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, generator=g).to(device=x.device, dtype=x.dtype)


def color(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5) per image."""
    n = x.shape[0]
    x = x + (_rand(n, g, x) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(n, g, x) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    x = (x - mean) * (_rand(n, g, x) + 0.5) + mean
    return x


def translation(x: torch.Tensor, g: torch.Generator | None = None, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size, filling with zeros (mid-grey in [-1, 1])."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), generator=g, device="cpu").to(x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=g, device="cpu").to(x.device)
    bi, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy + ty + 1, 0, h + 1)
    gx = torch.clamp(gx + tx + 1, 0, w + 1)
    padded = torch.nn.functional.pad(x, [1, 1, 1, 1])
    # Gather (N, H, W) positions for every channel: index the padded tensor in NHWC order.
    return padded.permute(0, 2, 3, 1)[bi, gy, gx].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, g: torch.Generator | None = None, ratio: float = 0.5) -> torch.Tensor:
    """Zero a random square of ``ratio`` of the image side in each image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # Square centred at a uniformly random pixel; it may hang over the border, as in DiffAugment.
    y0 = torch.randint(0, h, (n, 1, 1), generator=g, device="cpu").to(x.device) - ch // 2
    x0 = torch.randint(0, w, (n, 1, 1), generator=g, device="cpu").to(x.device) - cw // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= y0) & (ys < y0 + ch) & (xs >= x0) & (xs < x0 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: str, g: torch.Generator | None = None) -> torch.Tensor:
    """Apply the comma-separated policies in order; an empty policy returns ``x`` unchanged."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    if not names:
        return x
    # These element-wise ops and gathers run several times faster in NCHW than in channels_last on CPU.
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    x = x.contiguous()
    for name in names:
        x = POLICIES[name](x, g)
    return x.contiguous(memory_format=torch.channels_last) if cl else x
