"""The modern family (``model.arch = 'style'``): a small StyleGAN2-style generator and a residual D.

What it keeps from the field after DCGAN, and what it leaves out:

* G (Karras et al. 2020, StyleGAN2): a mapping network (z -> normalised -> MLP -> w, learning-rate
  multiplier 0.01) and a synthesis network that starts from a learned 4x4 constant and, at every
  resolution, upsamples and applies two 3x3 convolutions *modulated* by w (per-input-channel scales
  from an affine map of w) and *demodulated* (each output channel rescaled to unit expected
  variance), with a 1x1 toRGB per resolution summed into the image ("skip" architecture).
  No BatchNorm: each image depends on its own latent only, in training and in sampling alike.
  Left out: style mixing, path-length regularisation, FIR resampling filters (bilinear up /
  average-pool down instead: cheaper on a CPU, and exportable to ONNX as-is).
* Noise inputs (``model.noise_inputs``, off by default): as StyleGAN, each synthesis convolution adds
  a per-pixel noise map times a learned strength (initialised to 0). StyleGAN draws the maps at
  random, so a face would depend on more than its seed; here each map is a fixed function of w
  (:class:`PixelNoise`), so the maps look like white noise across faces but belong to the latent: the
  same seed, w or W+ gives the same face in generate, interpolate, projection and export. The maps
  carry no gradient back to w (G treats them as an input, as it would random noise).
* D: residual blocks (StyleGAN2's "resnet" D): two 3x3 convolutions and a 1x1 skip, both halving
  the resolution, summed with gain sqrt(1/2); a minibatch standard-deviation feature at 4x4; no
  normalisation, so R1/R2 penalties are well defined per image.
* Every weight uses the equalised learning rate (stored N(0, 1), scaled by 1/sqrt(fan_in) at run
  time), so Adam's steps are the same size for every layer.

The modulated convolution is computed in its non-grouped form (scale the input, one ordinary
convolution shared by the batch, scale the output): the same numbers as the per-sample weights of
the paper, but one dense convolution that the CPU and cuDNN kernels run at full speed, in
channels_last and under autocast.

Truncation (psi): w <- w_avg + psi * (w - w_avg), with ``w_avg`` the mean of the mapping network's
output over a fixed set of 10,000 latents (computed, not tracked: it always belongs to the weights
it is used with, EMA or not, one process or many). psi = 1 is exactly untruncated sampling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .generator_network import GeneratorNetwork

ACT_GAIN = math.sqrt(2.0)  # keeps the expected magnitude through leaky ReLU(0.2), as StyleGAN2
W_AVG_SAMPLES, W_AVG_SEED = 10_000, 20_241_201
NOISE_SEED = 20_261_207  # the noise bases: convolution j (0, 1) at resolution 2^k draws from NOISE_SEED + 2k + j


def style_channels(cfg: ModelConfig) -> dict[int, int]:
    """Feature maps per resolution, from 4x4 to the output: ``width`` at full size, doubled per halving,
    capped at ``max_width``. E.g. 64 px, width 32, cap 256: {4: 256, 8: 256, 16: 128, 32: 64, 64: 32}."""
    r = cfg.resolution
    out, res = {}, 4
    while res <= r:
        out[res] = min(cfg.width * (r // res), cfg.max_width)
        res *= 2
    return out


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * ACT_GAIN


class EqLinear(nn.Module):
    """Fully connected layer with the equalised learning rate (and an optional lr multiplier)."""

    def __init__(self, c_in: int, c_out: int, *, bias_init: float = 0.0, lr_mul: float = 1.0, act: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in) / lr_mul)
        self.bias = nn.Parameter(torch.full((c_out,), float(bias_init) / lr_mul))
        self.w_gain, self.lr_mul, self.act = lr_mul / math.sqrt(c_in), lr_mul, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.w_gain, self.bias * self.lr_mul)
        return _lrelu(x) if self.act else x


class EqConv2d(nn.Module):
    """Convolution with the equalised learning rate; ``down`` average-pools 2x2 before convolving."""

    def __init__(self, c_in: int, c_out: int, k: int, *, bias: bool = True, act: bool = True, down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, k, k))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.gain, self.pad, self.act, self.down = 1.0 / math.sqrt(c_in * k * k), k // 2, act, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2)
        x = F.conv2d(x, self.weight * self.gain, self.bias, padding=self.pad)
        return _lrelu(x) if self.act else x


class PixelNoise(nn.Module):
    """w (N, w_dim) -> one noise map (N, 1, R, R) per image, a fixed function of w.

    w is standardised per image (zero mean, unit RMS over its features) and projected on a basis of
    N(0, 1/w_dim) entries (a ~N(0, 1) value per pixel), then folded by sqrt(2) sin(3 a): the mapping
    network's w share a direction (projected, the maps of two faces correlate by ~0.18 for a trained G),
    which the fold removes (~0.001, measured on 256 faces), leaving zero mean and unit variance. So the
    maps look like white noise across faces and pixels, but are the same for the same w. The basis is
    drawn from ``seed`` when the module is built and not saved (a non-persistent buffer)."""

    basis: torch.Tensor

    def __init__(self, w_dim: int, res: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        basis = torch.randn(w_dim, res * res, generator=g) / math.sqrt(w_dim)
        self.register_buffer("basis", basis, persistent=False)
        self.res = res

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        w = w.detach().float()
        w = w - w.mean(1, keepdim=True)
        w = w * torch.rsqrt(w.square().mean(1, keepdim=True) + 1e-8)
        return (torch.sin((w @ self.basis) * 3.0) * math.sqrt(2.0)).view(-1, 1, self.res, self.res)


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated (and optionally demodulated) convolution, in its non-grouped form.

    y = demod * conv(x * s, W), s = affine(w) per input channel, demod_o = 1/sqrt(sum_{i,k} (W_oik s_i)^2).
    ``up`` doubles the resolution (bilinear) after the modulation and before the convolution.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        k: int,
        w_dim: int,
        *,
        demod: bool = True,
        up: bool = False,
        act: bool = True,
        noise: PixelNoise | None = None,
    ):
        super().__init__()
        self.affine = EqLinear(w_dim, c_in, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(c_out, c_in, k, k))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.gain, self.pad = 1.0 / math.sqrt(c_in * k * k), k // 2
        self.demod, self.up, self.act = demod, up, act
        self.noise = noise
        self.noise_strength = nn.Parameter(torch.zeros(())) if noise is not None else None

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w)  # (N, c_in)
        weight = self.weight * self.gain
        x = x * s[:, :, None, None].to(x.dtype)
        if self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = F.conv2d(x, weight.to(x.dtype), padding=self.pad)
        if self.demod:
            # sum_{i,k} (W_oik s_i)^2 = (s^2) @ (sum_k W_oik^2)^T, computed in fp32 whatever autocast does.
            d = torch.rsqrt(s.float().square() @ weight.float().square().sum((2, 3)).t() + 1e-8)
            x = x * d[:, :, None, None].to(x.dtype)
        if self.noise is not None and self.noise_strength is not None:
            x = x + (self.noise(w) * self.noise_strength).to(x.dtype)
        x = x + self.bias[None, :, None, None].to(x.dtype)
        return _lrelu(x) if self.act else x


class MappingNetwork(nn.Module):
    """z (N, z_dim) -> w (N, w_dim): normalise z to unit RMS, then an MLP with lr multiplier 0.01."""

    def __init__(self, z_dim: int, w_dim: int, layers: int):
        super().__init__()
        dims = [z_dim] + [w_dim] * layers
        self.net = nn.Sequential(*[EqLinear(a, b, lr_mul=0.01, act=True) for a, b in zip(dims[:-1], dims[1:])])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.float()
        z = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)
        return self.net(z)


class SynthesisBlock(nn.Module):
    """One resolution of G: (up + modulated conv, modulated conv) and its toRGB."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, *, first: bool, res: int = 4, noise: bool = False):
        super().__init__()

        def pixel_noise(layer: int) -> PixelNoise | None:  # layer 0/1 of the block at ``res``
            return PixelNoise(w_dim, res, NOISE_SEED + 2 * int(math.log2(res)) + layer) if noise else None

        self.conv0 = None if first else ModulatedConv2d(c_in, c_out, 3, w_dim, up=True, noise=pixel_noise(0))
        self.conv1 = ModulatedConv2d(c_out if not first else c_in, c_out, 3, w_dim, noise=pixel_noise(1))
        self.torgb = ModulatedConv2d(c_out, 3, 1, w_dim, demod=False, act=False)

    def forward(self, x: torch.Tensor, img: torch.Tensor | None, w: torch.Tensor):
        if self.conv0 is not None:
            x = self.conv0(x, w)
        x = self.conv1(x, w)
        y = self.torgb(x, w).float()
        if img is not None:
            y = y + F.interpolate(img, scale_factor=2.0, mode="bilinear", align_corners=False)
        return x, y


class StyleGenerator(GeneratorNetwork):
    """z (N, z_dim) -> image (N, 3, R, R), roughly in [-1, 1] (not squashed: as StyleGAN2, the
    image is clamped only when it is turned into pixels). ``forward(z, psi=0.7)`` truncates in W."""

    w_avg: torch.Tensor  # a buffer, registered in __init__

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        ch = style_channels(cfg)
        w_dim = cfg.z_dim
        self.mapping = MappingNetwork(cfg.z_dim, w_dim, cfg.mapping_layers)
        self.const = nn.Parameter(torch.randn(ch[4], 4, 4))
        res = sorted(ch)
        noise = cfg.noise_inputs
        self.blocks = nn.ModuleList(
            [SynthesisBlock(ch[4], ch[4], w_dim, first=True, res=4, noise=noise)]
            + [SynthesisBlock(ch[a], ch[b], w_dim, first=False, res=b, noise=noise) for a, b in zip(res[:-1], res[1:])]
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def synthesis(self, w: torch.Tensor) -> torch.Tensor:
        """Images from w (N, w_dim), one w for every block, or W+ (N, blocks, w_dim), one per block."""
        x = self.const[None].expand(w.shape[0], -1, -1, -1)
        img = None
        for i, block in enumerate(self.blocks):
            x, img = block(x, img, w[:, i] if w.dim() == 3 else w)
        assert img is not None
        return img

    def truncated(self, z: torch.Tensor, psi: float) -> torch.Tensor:
        """``psi`` < 1 moves w towards ``w_avg`` (StyleGAN's truncation trick, in W)."""
        w = self.mapping(z)
        if psi != 1.0:
            w = self.w_avg.float().lerp(w, psi)
        return self.synthesis(w)

    @torch.no_grad()
    def compute_w_avg(self, n: int = W_AVG_SAMPLES, seed: int = W_AVG_SEED) -> torch.Tensor:
        """Set ``w_avg`` to the mean of w over ``n`` fixed latents (deterministic for the weights)."""
        dev = self.w_avg.device
        z = torch.randn(n, self.cfg.z_dim, generator=torch.Generator().manual_seed(seed))
        total = torch.zeros_like(self.w_avg, dtype=torch.float64)
        for zb in z.split(2500):
            total += self.mapping(zb.to(dev)).double().sum(0)
        self.w_avg.copy_((total / n).to(self.w_avg.dtype))
        return self.w_avg


class DiscriminatorBlock(nn.Module):
    """conv 3x3, then conv 3x3 at half resolution, plus a 1x1 skip at half resolution, gain sqrt(1/2)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv0 = EqConv2d(c_in, c_in, 3)
        self.conv1 = EqConv2d(c_in, c_out, 3, down=True)
        self.skip = EqConv2d(c_in, c_out, 1, bias=False, act=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


def minibatch_stddev(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Append one feature map: the standard deviation across groups of ``group`` consecutive images.

    Groups are consecutive rows, so a batch split into per-process shards whose size is a multiple of
    ``group`` gives every image the same statistic as in one process."""
    n, c, h, w = x.shape
    g = math.gcd(group, n)
    y = x.float().reshape(n // g, g, c, h, w)
    y = (y.var(1, unbiased=False) + 1e-8).sqrt().mean((1, 2, 3))  # (n/g,)
    y = y.repeat_interleave(g)[:, None, None, None].expand(n, 1, h, w).to(x.dtype)
    return torch.cat([x, y], 1)


class ResidualDiscriminator(nn.Module):
    """image (N, 3, R, R) -> logit (N,)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        ch = style_channels(cfg)
        res = sorted(ch, reverse=True)  # R, R/2, ..., 4
        self.fromrgb = EqConv2d(3, ch[cfg.resolution], 1)
        self.blocks = nn.Sequential(*[DiscriminatorBlock(ch[a], ch[b]) for a, b in zip(res[:-1], res[1:])])
        self.conv = EqConv2d(ch[4] + 1, ch[4], 3)
        self.fc = EqLinear(ch[4] * 16, ch[4], act=True)
        self.out = EqLinear(ch[4], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.cfg.resolution
        if x.dim() != 4 or x.shape[1:] != (3, r, r):
            raise ValueError(f"Discriminator expects images of shape (N, 3, {r}, {r}), got {tuple(x.shape)}")
        x = self.blocks(self.fromrgb(x))
        x = self.conv(minibatch_stddev(x))
        return self.out(self.fc(x.flatten(1))).flatten()
