"""DCGAN generator and discriminator (Radford et al. 2016) for square images of 32..256 px.

The number of blocks follows from the resolution: a 4x4 seed is doubled ``log2(R) - 2`` times.
Two kernel layouts are offered:

* ``reference``: kernel 5, stride 2, padding 2 (output_padding 1 in G), as in the original DCGAN
  write-ups (the TensorFlow DCGAN and the reports this project reproduces);
* ``tutorial``: kernel 4, stride 2, padding 1, as in the PyTorch DCGAN tutorial / pytorch/examples.

Both start G with ``ConvTranspose2d(z_dim, C, 4, 1, 0)`` (1x1 -> 4x4) and end D with
``Conv2d(C, 1, 4, 1, 0)`` (4x4 -> 1x1). D returns one logit per image; the loss applies the sigmoid.
The layers are ``torch.nn``'s with an optional matrix-multiply route for small maps (``gemm_conv``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModelConfig
from .gemm_conv import Conv2d, ConvTranspose2d
from .generator_network import GeneratorNetwork
from .randomness import seeded_rng


def _kernel(arch: str) -> tuple[int, int, int]:
    """(kernel, padding, output_padding) of the stride-2 layers."""
    if arch == "reference":
        return 5, 2, 1
    if arch == "tutorial":
        return 4, 1, 0
    raise ValueError(f"model.arch must be 'reference' or 'tutorial', got {arch!r}")


def num_blocks(resolution: int) -> int:
    """Number of stride-2 layers between 4x4 and ``resolution``."""
    return int(math.log2(resolution)) - 2


def channels(cfg: ModelConfig) -> list[int]:
    """Feature maps from the 4x4 end to the full-resolution end, e.g. [512, 256, 128, 64] at 64 px."""
    n = num_blocks(cfg.resolution)
    return [cfg.width * 2 ** (n - 1 - i) for i in range(n)]


class DCGANGenerator(GeneratorNetwork):
    """z (N, z_dim) -> image (N, 3, R, R) in [-1, 1]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        k, p, op = _kernel(cfg.arch)
        ch = channels(cfg)
        layers: list[nn.Module] = [
            # (N, z, 1, 1) -> (N, ch[0], 4, 4)
            ConvTranspose2d(cfg.z_dim, ch[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(ch[0]),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            # (N, c_in, s, s) -> (N, c_out, 2s, 2s)
            layers += [
                ConvTranspose2d(c_in, c_out, k, 2, p, output_padding=op, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        # (N, ch[-1], R/2, R/2) -> (N, 3, R, R)
        layers += [ConvTranspose2d(ch[-1], 3, k, 2, p, output_padding=op, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def truncated(self, z: torch.Tensor, psi: float) -> torch.Tensor:
        """``psi`` < 1 moves z towards the average latent, z = 0 (the truncation trick in Z)."""
        if psi != 1.0:
            z = z * psi
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """image (N, 3, R, R) -> logit (N,). No normalisation on the first layer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        k, p, _ = _kernel(cfg.arch)
        ch = channels(cfg)[::-1]  # e.g. [64, 128, 256, 512]
        sn = nn.utils.parametrizations.spectral_norm if cfg.spectral_norm else (lambda m: m)
        use_bn = cfg.d_norm == "batch"
        # (N, 3, R, R) -> (N, ch[0], R/2, R/2)
        layers: list[nn.Module] = [sn(Conv2d(3, ch[0], k, 2, p, bias=not use_bn)), nn.LeakyReLU(0.2, inplace=True)]
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            # (N, c_in, s, s) -> (N, c_out, s/2, s/2)
            layers.append(sn(Conv2d(c_in, c_out, k, 2, p, bias=not use_bn)))
            if use_bn:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        # (N, ch[-1], 4, 4) -> (N, 1, 1, 1)
        layers.append(sn(Conv2d(ch[-1], 1, 4, 1, 0, bias=False)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.cfg.resolution
        if x.dim() != 4 or x.shape[1:] != (3, r, r):
            raise ValueError(f"Discriminator expects images of shape (N, 3, {r}, {r}), got {tuple(x.shape)}")
        return self.net(x).flatten()


def init_weights(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02); BatchNorm gamma N(1, 0.02), beta 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            # With spectral norm the raw weight lives in parametrizations.weight.original.
            parametrizations = getattr(m, "parametrizations", None)
            w = parametrizations.weight.original if parametrizations is not None else m.weight
            nn.init.normal_(w, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def build_generator(cfg: ModelConfig) -> GeneratorNetwork:
    """G of the family ``cfg.arch`` names (weights as constructed: see build_models for the DCGAN init)."""
    if cfg.family == "style":
        from .stylegan import StyleGenerator

        return StyleGenerator(cfg)
    return DCGANGenerator(cfg)


def build_models(cfg: ModelConfig) -> tuple[GeneratorNetwork, nn.Module]:
    """Both networks of the family ``cfg.arch`` names, initialised as the config says."""
    if cfg.family == "style":
        from .stylegan import ResidualDiscriminator, StyleGenerator

        return StyleGenerator(cfg), ResidualDiscriminator(cfg)
    g, d = DCGANGenerator(cfg), DCGANDiscriminator(cfg)
    if cfg.init == "dcgan":
        init_weights(g)
        init_weights(d)
    return g, d


@torch.no_grad()
def recalibrate_batchnorm(g: GeneratorNetwork, *, batches: int = 8, batch_size: int = 128, seed: int = 12345) -> None:
    """Re-estimate G's BatchNorm running statistics for its current weights.

    An EMA copy of G inherits running statistics measured on other weights; sampling in eval mode
    with them gives washed-out images. A few forward passes in train mode with cumulative averaging
    (momentum=None) give statistics that match the EMA weights. Deterministic for a given seed.
    """
    bns = [m for m in g.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return
    was_training = g.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    g.train()
    device = next(g.parameters()).device
    rng = seeded_rng(seed)
    for _ in range(batches):
        g(torch.randn(batch_size, g.z_dim, generator=rng).to(device))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    g.train(was_training)
