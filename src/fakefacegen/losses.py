"""GAN losses as pure functions of D's logits (no sigmoid inside the networks).

bce:   non-saturating loss of Goodfellow et al. 2014 as used by DCGAN, with optional label smoothing.
hinge: Lim & Ye 2017 / Miyato et al. 2018 (SNGAN).
lsgan: least squares, Mao et al. 2017, with targets 1 (real) and 0 (fake) on the raw output.
rpgan: the relativistic pairing loss (Jolicoeur-Martineau 2019; the loss of R3GAN, Huang et al. 2024):
       D judges each real image against a generated one, softplus(D(fake_i) - D(real_i)); G the other way
       round, so G's loss needs D's logits on real images too. R3GAN pairs it with R1 and R2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss(
    real: torch.Tensor, fake: torch.Tensor, kind: str = "bce", *, real_label: float = 1.0, fake_label: float = 0.0
) -> torch.Tensor:
    """Discriminator loss: push real logits up and fake logits down."""
    real, fake = real.float(), fake.float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(
            real, torch.full_like(real, real_label)
        ) + F.binary_cross_entropy_with_logits(fake, torch.full_like(fake, fake_label))
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if kind == "lsgan":
        return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()
    if kind == "rpgan":
        return F.softplus(fake - real).mean()
    raise ValueError(f"unknown loss {kind!r}")


def g_loss(fake: torch.Tensor, kind: str = "bce", *, real: torch.Tensor | None = None) -> torch.Tensor:
    """Generator loss on D's logits for generated images (G wants them judged real); ``real``: D's logits on
    real images, which the relativistic loss (``rpgan``) compares with, pair by pair (no gradient needed)."""
    fake = fake.float()
    if kind == "bce":
        # Non-saturating: maximise log D(G(z)) rather than minimise log(1 - D(G(z))).
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    if kind == "hinge":
        return -fake.mean()
    if kind == "lsgan":
        return 0.5 * ((fake - 1.0) ** 2).mean()
    if kind == "rpgan":
        if real is None:
            raise ValueError("the rpgan loss of G needs D's logits on real images (real=...)")
        return F.softplus(real.float() - fake).mean()
    raise ValueError(f"unknown loss {kind!r}")


def gradient_penalty(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """E ||grad_x D(x)||^2 over the images (the caller multiplies by gamma / 2): R1 (Mescheder et al.
    2018) on real images, R2 on generated ones.

    ``images`` must have requires_grad=True and ``logits`` must come from them.
    """
    (grad,) = torch.autograd.grad(logits.float().sum(), images, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()
