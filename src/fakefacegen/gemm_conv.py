"""Convolutions that can take a matrix-multiply route on small feature maps.

At the narrow end of a DCGAN (4x4 maps with 256-1024 channels) oneDNN's bf16 convolution kernels
leave a CPU's bf16 matrix units (AMX, AVX512-BF16) mostly idle. ``python benchmarks/bench_gemm_conv.py``
(2-core AMX Xeon, batch 128, bf16 autocast, channels_last, forward+backward, median of 6 interleaved,
2026-11-30): D's 256->512 convolution from 8x8 to 4x4 156.0 ms direct vs 65.3 ms as gather + one matrix
multiply (kernel 5; kernel 4: 187.5 vs 59.5 ms), G's 512->256 transposed convolution from 4x4 to 8x8
328.9 vs 103.8 ms (kernel 5; kernel 4: 214.2 vs 57.0 ms). On 8x8 maps it is mixed (16x16 -> 8x8: 138.7
vs 137.3 ms, kernel 4 95.5 vs 71.2; 8x8 -> 16x16: 55.1 vs 94.9, kernel 4 103.2 vs 98.8), on larger maps
the direct kernels win (32x32 -> 16x16: 87.5 vs 277.9 ms), and on 1x1 ends it is a draw (D's 512->1 last
layer: 9.7 vs 10.5 ms), hence the window of 4 to 16 pixels.

:class:`Conv2d` and :class:`ConvTranspose2d` are the ``torch.nn`` layers (same parameters, same state
dict) with that second route: ``unfold`` + ``matmul`` for a convolution, ``matmul`` + ``fold`` for a transposed one.
Both compute the same sums of products, in another order.

The unfold and fold work on channels-last (NHWC) memory (:func:`_unfold`, :func:`_fold`): each window
is a strided view whose rows are whole pixels (C contiguous values), so gathering the windows is one
strided copy and summing them back is one add per kernel tap. torch's ``F.unfold``/``F.fold`` (NCHW
``im2col``/``col2im``) plus the transposes around them took ~3x the time of the matrix products
themselves at batch 128 (torch.profiler, reference 64 px model: 1.05 s of a 3.04 s profile of 3 steps,
against 0.37 s in ``mm``); with these the same profile totals 2.12 s. Overlapping windows are summed in
fp32, as a direct kernel accumulates.

The route is off unless :func:`set_gemm_route` turns it on for a model, and even then it is taken
only under CPU bf16 autocast, for layers whose small side (output of a convolution, input of a
transposed convolution) has between :data:`MIN_PIXELS` and ``max_pixels`` pixels (:data:`MAX_PIXELS`
in training). ``runtime.choose_fast_path`` decides from the CPU whether a training run uses it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


def _cpu_bf16_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled() and torch.get_autocast_cpu_dtype() == torch.bfloat16


def _windows(
    xp: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int]
) -> torch.Tensor:
    """(N, Hp, Wp, C) contiguous -> (N, oh, ow, kh, kw, C): a view of every output pixel's window."""
    n, _, _, c = xp.shape
    s0, s1, s2, _ = xp.stride()
    return xp.as_strided((n, *out_hw, *kernel, c), (s0, stride[0] * s1, stride[1] * s2, s1, s2, 1))


def _sum_windows(cols: torch.Tensor, frame_hw: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """(N, oh, ow, kh, kw, C) -> (N, Hp, Wp, C), at least fp32: each window added back where it came
    from (the adjoint of :func:`_windows`), one strided add per kernel tap."""
    n, oh, ow, kh, kw, c = cols.shape
    (sh, sw) = stride
    out = cols.new_zeros((n, *frame_hw, c), dtype=torch.promote_types(cols.dtype, torch.float32))
    for ky in range(kh):
        for kx in range(kw):
            out[:, ky : ky + sh * (oh - 1) + 1 : sh, kx : kx + sw * (ow - 1) + 1 : sw] += cols[:, :, :, ky, kx]
    return out


def _padded(x: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
    """(N, H, W, C), any strides -> a contiguous zero-padded copy (N, H + 2ph, W + 2pw, C)."""
    (ph, pw) = padding
    if ph == pw == 0:
        return x.contiguous()
    n, h, w, c = x.shape
    xp = x.new_zeros((n, h + 2 * ph, w + 2 * pw, c))
    xp[:, ph : ph + h, pw : pw + w] = x
    return xp


class _Unfold(torch.autograd.Function):
    """(N, H, W, C) -> (N*oh*ow, kh*kw*C) rows, one per output pixel, taps in (ky, kx, c) order."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, out_hw):
        ctx.geometry = (x.shape, x.dtype, kernel, stride, padding, out_hw)
        n, _, _, c = x.shape
        return _windows(_padded(x, padding), kernel, stride, out_hw).reshape(
            n * out_hw[0] * out_hw[1], kernel[0] * kernel[1] * c
        )

    @staticmethod
    def backward(ctx, grad_rows):
        (n, h, w, c), dtype, kernel, stride, (ph, pw), out_hw = ctx.geometry
        g = _sum_windows(grad_rows.reshape(n, *out_hw, *kernel, c), (h + 2 * ph, w + 2 * pw), stride)
        return g[:, ph : ph + h, pw : pw + w].to(dtype), None, None, None, None


class _Fold(torch.autograd.Function):
    """(N*h*w, kh*kw*C) stamps, one per input pixel -> (N, oh, ow, C), overlaps summed in at least fp32
    (the adjoint of :class:`_Unfold`, i.e. a transposed convolution's output)."""

    @staticmethod
    def forward(ctx, rows, in_hw, kernel, stride, padding, out_hw):
        c = rows.shape[1] // (kernel[0] * kernel[1])
        n = rows.shape[0] // (in_hw[0] * in_hw[1])
        ctx.geometry = (rows.dtype, in_hw, kernel, stride, padding)
        (ph, pw), (oh, ow) = padding, out_hw
        y = _sum_windows(rows.reshape(n, *in_hw, *kernel, c), (oh + 2 * ph, ow + 2 * pw), stride)
        return y[:, ph : ph + oh, pw : pw + ow]

    @staticmethod
    def backward(ctx, grad_y):
        dtype, in_hw, kernel, stride, padding = ctx.geometry
        n, _, _, c = grad_y.shape
        rows = _windows(_padded(grad_y.to(dtype), padding), kernel, stride, in_hw)
        return rows.reshape(n * in_hw[0] * in_hw[1], -1), None, None, None, None, None


_unfold = _Unfold.apply
_fold = _Fold.apply


MIN_PIXELS = 4
"""Below this (D's 4x4 -> 1x1 end, G's 1x1 noise input) the direct kernels were as fast or faster."""
MAX_PIXELS = 16
"""Above this (8x8 maps and larger) the direct kernels were faster."""


class _GemmRoute:
    gemm_max_pixels: int = 0
    """0: never take the matrix-multiply route (the default for every layer)."""
    # Set by the torch conv class this is mixed into (declared here for the type checker only).
    groups: int
    dilation: tuple[int, ...]
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"]

    def _route_ok(self, x: torch.Tensor, small_pixels: int) -> bool:
        return (
            MIN_PIXELS <= small_pixels <= self.gemm_max_pixels
            and x.device.type == "cpu"
            and x.dim() == 4
            and self.groups == 1
            and self.dilation == (1, 1)
            and self.padding_mode == "zeros"
            and _cpu_bf16_autocast()
        )


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
        rows = _unfold(x.permute(0, 2, 3, 1), (kh, kw), (sh, sw), (ph, pw), (oh, ow))  # (N*oh*ow, kh*kw*C)
        y = rows @ weight.permute(0, 2, 3, 1).reshape(self.out_channels, -1).t()  # (N*oh*ow, out)
        if bias is not None:
            y = y + bias.to(y.dtype)
        return y.view(n, oh, ow, self.out_channels).permute(0, 3, 1, 2)  # NCHW shape, NHWC memory


class ConvTranspose2d(_GemmRoute, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with a matmul + col2im route for small inputs (see the module docstring)."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if (
            output_size is not None
            or isinstance(self.padding, str)  # never for a transposed conv; narrows the type
            or x.dim() != 4
            or not self._route_ok(x, x.shape[2] * x.shape[3])
        ):
            return super().forward(x, output_size)
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oph, opw = self.output_padding
        oh, ow = (h - 1) * sh - 2 * ph + kh + oph, (w - 1) * sw - 2 * pw + kw + opw
        x, weight = x.to(torch.bfloat16), self.weight.to(torch.bfloat16)
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        stamps = rows @ weight.permute(0, 2, 3, 1).reshape(c, -1)  # (N*h*w, kh*kw*out): each pixel's stamp
        y = _fold(stamps, (h, w), (kh, kw), (sh, sw), (ph, pw), (oh, ow))  # (N, oh, ow, out), fp32 sums
        if self.bias is not None:
            y = y + self.bias.float()
        y = y.to(torch.bfloat16).permute(0, 3, 1, 2)  # NCHW shape, NHWC memory
        return y if x.is_contiguous(memory_format=torch.channels_last) else y.contiguous()


def set_gemm_route(model: nn.Module, max_pixels: int) -> int:
    """Let ``model``'s convolutions take the matrix-multiply route for small maps (0 = never).

    Returns how many layers can take it."""
    n = 0
    for m in model.modules():
        if isinstance(m, _GemmRoute):
            m.gemm_max_pixels = max_pixels
            n += 1
    return n
