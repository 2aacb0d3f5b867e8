"""The matrix-multiply route of the convolution layers: same result as torch's kernels, taken only
where it is switched on, and invisible in state dicts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fakefacegen import gemm_conv
from fakefacegen.config import ModelConfig
from fakefacegen.gemm_conv import Conv2d, ConvTranspose2d, set_gemm_route
from fakefacegen.models import build_models

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)

# (kind, c_in, c_out, input side, kernel, stride, padding, output_padding): the DCGAN layers at 4x4 / 8x8
LAYERS = [
    ("conv", 32, 48, 8, 5, 2, 2, 0),  # reference D, 8x8 -> 4x4
    ("conv", 32, 48, 8, 4, 2, 1, 0),  # tutorial D
    ("conv", 32, 8, 8, 4, 4, 0, 0),  # 8x8 -> 2x2 (4 pixels, the smallest routed map)
    ("conv", 8, 16, 9, 3, 2, 1, 0),  # odd size
    ("convT", 48, 32, 4, 5, 2, 2, 1),  # reference G, 4x4 -> 8x8
    ("convT", 48, 32, 4, 4, 2, 1, 0),  # tutorial G
    ("convT", 20, 48, 2, 4, 2, 1, 0),  # 2x2 -> 4x4
]


def make(kind, cin, cout, k, s, p, op, bias):
    torch.manual_seed(0)
    if kind == "conv":
        m = Conv2d(cin, cout, k, s, p, bias=bias)
    else:
        m = ConvTranspose2d(cin, cout, k, s, p, output_padding=op, bias=bias)
    nn.init.normal_(m.weight, 0.0, 0.05)
    if bias:
        nn.init.normal_(m.bias, 0.0, 0.1)
    return m


def reference(kind, x, m):
    """fp64 torch.nn.functional on the same weights: the independent reference."""
    b = None if m.bias is None else m.bias.double()
    if kind == "conv":
        return F.conv2d(x.double(), m.weight.double(), b, m.stride, m.padding)
    return F.conv_transpose2d(x.double(), m.weight.double(), b, m.stride, m.padding, m.output_padding)


@pytest.mark.parametrize("layer", LAYERS, ids=lambda t: "-".join(map(str, t)))
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_route_matches_the_convolution_in_value_and_gradient(layer, bias, channels_last):
    kind, cin, cout, side, k, s, p, op = layer
    m = make(kind, cin, cout, k, s, p, op, bias)
    x = torch.randn(6, cin, side, side)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
        m = m.to(memory_format=torch.channels_last)
    set_gemm_route(m, 1 << 20)
    xr = x.clone().requires_grad_(True)
    with torch.autocast(**BF16):
        y = m(xr)
    ref = reference(kind, x, m)
    assert y.shape == ref.shape and y.dtype == torch.bfloat16
    # bf16 inputs and outputs: ~3 significant digits, as torch's own bf16 kernels
    assert ((y.double() - ref).norm() / ref.norm()) < 1e-2
    if channels_last:
        assert y.is_contiguous(memory_format=torch.channels_last)

    g = torch.randn(ref.shape, dtype=torch.float64)
    y.double().backward(g)
    xd = x.double().requires_grad_(True)
    wd = m.weight.detach().double().requires_grad_(True)
    bd = None if m.bias is None else m.bias.detach().double()
    fn = F.conv2d if kind == "conv" else F.conv_transpose2d
    extra = () if kind == "conv" else (m.output_padding,)
    fn(xd, wd, bd, m.stride, m.padding, *extra).backward(g)
    for got, want in [(xr.grad, xd.grad), (m.weight.grad, wd.grad)]:
        assert ((got.double() - want).norm() / want.norm()) < 2e-2


@pytest.mark.parametrize(
    "geom",
    [
        ((5, 5), (2, 2), (2, 2), 8),
        ((4, 4), (2, 2), (1, 1), 8),
        ((3, 3), (2, 2), (1, 1), 9),
        ((4, 4), (4, 4), (0, 0), 8),
    ],
    ids=lambda g: f"k{g[0][0]}s{g[1][0]}p{g[2][0]}-{g[3]}",
)
@pytest.mark.slow
def test_nhwc_unfold_and_fold_match_torch_and_are_adjoint(geom):
    """The channels-last gather/scatter against torch's NCHW F.unfold / F.fold (exact on integer-valued
    floats), and gradcheck of both in float64."""
    kernel, stride, padding, side = geom
    n, c = 2, 3
    out = tuple((side + 2 * p - k) // s + 1 for k, s, p in zip(kernel, stride, padding))
    x = torch.randint(-50, 50, (n, c, side, side)).float()
    rows = gemm_conv._unfold(x.permute(0, 2, 3, 1), kernel, stride, padding, out)
    cols = F.unfold(x, kernel, padding=padding, stride=stride)  # (N, C*kh*kw, L), taps in (c, ky, kx) order
    want = cols.view(n, c, *kernel, -1).permute(0, 4, 2, 3, 1).reshape(rows.shape)  # -> (ky, kx, c)
    assert torch.equal(rows, want)

    stamps = torch.randint(-50, 50, rows.shape).float()
    y = gemm_conv._fold(stamps, out, kernel, stride, padding, (side, side))  # the adjoint, back to side x side
    cols = stamps.view(n, -1, *kernel, c).permute(0, 4, 2, 3, 1).reshape(n, c * kernel[0] * kernel[1], -1)
    want = F.fold(cols, (side, side), kernel, padding=padding, stride=stride)
    assert y.shape == (n, side, side, c) and torch.equal(y.permute(0, 3, 1, 2), want)

    xd = torch.randn(n, side, side, c, dtype=torch.float64, requires_grad=True)
    sd = torch.randn(rows.shape, dtype=torch.float64, requires_grad=True)
    unfold = lambda t: gemm_conv._unfold(t, kernel, stride, padding, out)  # noqa: E731
    fold = lambda t: gemm_conv._fold(t, out, kernel, stride, padding, (side, side))  # noqa: E731
    assert torch.autograd.gradcheck(unfold, (xd,)) and torch.autograd.gradcheck(fold, (sd,))
    # second order too (the R1 penalty differentiates D's input gradient again), on one image, 2 channels
    x1 = torch.randn(1, side, side, 2, dtype=torch.float64, requires_grad=True)
    s1 = torch.randn(out[0] * out[1], kernel[0] * kernel[1] * 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(unfold, (x1,)) and torch.autograd.gradgradcheck(fold, (s1,))


def test_route_is_taken_only_when_switched_on_under_cpu_bf16_autocast(monkeypatch):
    calls = []
    unfold, fold = gemm_conv._unfold, gemm_conv._fold
    monkeypatch.setattr(gemm_conv, "_unfold", lambda *a: calls.append("unfold") or unfold(*a))
    monkeypatch.setattr(gemm_conv, "_fold", lambda *a: calls.append("fold") or fold(*a))
    conv, convt = make("conv", 8, 8, 5, 2, 2, 0, False), make("convT", 8, 8, 5, 2, 2, 1, False)
    x8, x4 = torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4)

    def run():
        calls.clear()
        conv(x8), convt(x4)
        return list(calls)

    with torch.autocast(**BF16):
        assert run() == []  # off by default
        set_gemm_route(conv, 16), set_gemm_route(convt, 16)
        assert run() == ["unfold", "fold"]  # 4x4 output / 4x4 input: small enough
        set_gemm_route(conv, 15), set_gemm_route(convt, 15)
        assert run() == []  # above the threshold
        conv1 = make("conv", 8, 1, 4, 1, 0, 0, False)
        set_gemm_route(conv1, 1 << 20)
        calls.clear()
        conv1(torch.randn(2, 8, 4, 4))
        assert calls == []  # a 1x1 output (D's last layer): below MIN_PIXELS
        set_gemm_route(conv, 16), set_gemm_route(convt, 16)
    assert run() == []  # fp32: torch's kernels


def test_models_keep_their_state_dict_and_count_their_layers():
    cfg = ModelConfig(resolution=64, arch="tutorial")
    g, d = build_models(cfg)
    ref_keys = {k for k in g.state_dict()}
    assert set_gemm_route(g, 16) == 5 and set_gemm_route(d, 16) == 5
    assert set(g.state_dict()) == ref_keys
    # a plain-nn checkpoint loads (the layers are the torch.nn ones with another forward)
    plain = nn.ConvTranspose2d(cfg.z_dim, 512, 4, 1, 0, bias=False)
    g.net[0].load_state_dict(plain.state_dict())
    assert torch.equal(g.net[0].weight, plain.weight)


def test_spectral_norm_layers_take_the_route_too():
    cfg = ModelConfig(resolution=32, arch="reference", spectral_norm=True, d_norm="none", width=16)
    _, d = build_models(cfg)
    d.eval()  # no power-iteration update between the two calls
    x = torch.randn(4, 3, 32, 32)
    with torch.autocast(**BF16):
        direct = d(x).float()
        set_gemm_route(d, 16)
        routed = d(x).float()
    assert torch.allclose(direct, routed, rtol=0.02, atol=0.02)


@pytest.mark.parametrize(
    "native, setting, precision, want",
    [
        (True, "auto", "bf16", 16),
        (False, "auto", "bf16", 0),
        (False, "on", "bf16", 16),
        (True, "off", "bf16", 0),
        (True, "on", "fp32", 0),  # the route only acts under bf16 autocast
    ],
)
def test_fast_path_turns_the_route_on_from_what_the_cpu_has(monkeypatch, native, setting, precision, want):
    from fakefacegen import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    fast = runtime.choose_fast_path(torch.device("cpu"), precision, "auto", torch.get_num_threads(), setting)
    assert fast.gemm_max_pixels == want
    assert ("GEMM" in fast.describe()) == bool(want)


@pytest.mark.slow
def test_trainer_sets_the_route_on_its_networks(dataset32, tmp_path):
    from fakefacegen.config import make_config
    from fakefacegen.train import Trainer

    for setting, want in [("on", 16), ("off", 0)]:
        cfg = make_config("debug", ["train.precision=bf16", f"train.gemm_convs={setting}"], data=str(dataset32))
        tr = Trainer(cfg, outdir=tmp_path / setting, progress=False)
        layers = [m for net in (tr.g, tr.d) for m in net.modules() if isinstance(m, (Conv2d, ConvTranspose2d))]
        assert layers and {m.gemm_max_pixels for m in layers} == {want}
        tr.run()  # and a bf16 run with it trains
        assert (tr.run_dir / "checkpoints").is_dir()
