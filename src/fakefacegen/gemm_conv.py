"""Convolutions that can take a matrix-multiply route on small feature maps.

At the narrow end of a DCGAN (4x4 maps with 256-1024 channels) oneDNN's bf16 convolution kernels
leave a CPU's bf16 matrix units (AMX, AVX512-BF16) mostly idle. Measured on a 2-core AMX Xeon at
batch 128 under bf16 autocast, forward+backward, median of 5 interleaved: D's 256->512 convolution
from 8x8 to 4x4 190.6 ms direct vs 142.6 ms as im2col + one matrix multiply (kernel 5; kernel 4:
123.9 vs 93.5 ms), G's 512->256 transposed convolution from 4x4 to 8x8 252.3 vs 197.7 ms (kernel 5;
kernel 4: 110.0 vs 113.2 ms). On larger maps (16x16 -> 8x8: 56 vs 288 ms) and on 1x1 ends (D's
512->1 last layer: 5.1 vs 23.1 ms) the direct kernels win, hence the window of 4 to 16 pixels.
:class:`Conv2d` and :class:`ConvTranspose2d` are the ``torch.nn`` layers (same parameters, same state
dict) with that second route: ``unfold`` + ``matmul`` for a convolution, ``matmul`` + ``fold`` for a transposed one.
Both compute the same sums of products, in another order.

The route is off unless :func:`set_gemm_route` turns it on for a model, and even then it is taken
only under CPU bf16 autocast, for layers whose small side (output of a convolution, input of a
transposed convolution) has between :data:`MIN_PIXELS` and ``max_pixels`` pixels (:data:`MAX_PIXELS`
in training). ``runtime.choose_fast_path`` decides from the CPU whether a training run uses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _cpu_bf16_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled() and torch.get_autocast_cpu_dtype() == torch.bfloat16


MIN_PIXELS = 4
"""Below this (D's 4x4 -> 1x1 end, G's 1x1 noise input) the direct kernels were as fast or faster."""
MAX_PIXELS = 16
"""Above this (8x8 maps and larger) the direct kernels were faster."""


class _GemmRoute:
    gemm_max_pixels: int = 0
    """0: never take the matrix-multiply route (the default for every layer)."""

    def _route_ok(self, x: torch.Tensor, small_pixels: int) -> bool:
        return (MIN_PIXELS <= small_pixels <= self.gemm_max_pixels and x.device.type == "cpu" and x.dim() == 4
                and self.groups == 1 and self.dilation == (1, 1) and self.padding_mode == "zeros"
                and _cpu_bf16_autocast())


class Conv2d(_GemmRoute, nn.Conv2d):
    """``nn.Conv2d`` with an im2col + matmul route for small outputs (see the module docstring)."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if not self.gemm_max_pixels or isinstance(self.padding, str):
            return super()._conv_forward(x, weight, bias)
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if not self._route_ok(x, oh * ow):
            return super()._conv_forward(x, weight, bias)
        x, weight = x.to(torch.bfloat16), weight.to(torch.bfloat16)
        cols = F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))  # (N, C*kh*kw, oh*ow)
        rows = cols.transpose(1, 2).reshape(n * oh * ow, c * kh * kw)
        y = rows @ weight.reshape(self.out_channels, -1).t()  # (N*oh*ow, out)
        if bias is not None:
            y = y + bias.to(y.dtype)
        return y.view(n, oh, ow, self.out_channels).permute(0, 3, 1, 2)  # NCHW shape, NHWC memory


class ConvTranspose2d(_GemmRoute, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with a matmul + col2im route for small inputs (see the module docstring)."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None or x.dim() != 4 or not self._route_ok(x, x.shape[2] * x.shape[3]):
            return super().forward(x, output_size)
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oph, opw = self.output_padding
        oh, ow = (h - 1) * sh - 2 * ph + kh + oph, (w - 1) * sw - 2 * pw + kw + opw
        x, weight = x.to(torch.bfloat16), self.weight.to(torch.bfloat16)
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        cols = rows @ weight.reshape(c, -1)  # (N*h*w, out*kh*kw): each input pixel's stamp
        # (N, out*kh*kw, h*w); the overlapping stamps are summed in fp32, as a direct kernel accumulates
        cols = cols.view(n, h * w, -1).transpose(1, 2).float()
        y = F.fold(cols, (oh, ow), (kh, kw), padding=(ph, pw), stride=(sh, sw))
        if self.bias is not None:
            y = y + self.bias.float()[:, None, None]
        y = y.to(torch.bfloat16)
        return y.contiguous(memory_format=torch.channels_last) if x.is_contiguous(
            memory_format=torch.channels_last) else y


def set_gemm_route(model: nn.Module, max_pixels: int) -> int:
    """Let ``model``'s convolutions take the matrix-multiply route for small maps (0 = never).

    Returns how many layers can take it."""
    n = 0
    for m in model.modules():
        if isinstance(m, _GemmRoute):
            m.gemm_max_pixels = max_pixels
            n += 1
    return n
