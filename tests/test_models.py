import math

import pytest
import torch
from torch import nn

from fakefacegen.config import ConfigError, ModelConfig
from fakefacegen.models import DCGANDiscriminator, DCGANGenerator, build_models, channels, recalibrate_batchnorm


@pytest.mark.parametrize("res", [32, 64, pytest.param(128, marks=pytest.mark.slow)])
@pytest.mark.parametrize("arch", ["reference", "tutorial"])
def test_shapes_and_ranges(res, arch):
    cfg = ModelConfig(resolution=res, width=8, arch=arch)
    g, d = build_models(cfg)
    z = torch.randn(3, 100)
    x = g(z)
    assert x.shape == (3, 3, res, res)
    assert x.min() >= -1 and x.max() <= 1  # Tanh output
    out = d(x)
    assert out.shape == (3,)  # one logit per image, no sigmoid applied
    # number of stride-2 layers follows the resolution
    n_up = sum(isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2) for m in g.modules())
    assert n_up == int(math.log2(res)) - 2


def test_reference_64_layout_matches_the_write_ups():
    g, d = build_models(ModelConfig())
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert (convs[0].in_channels, convs[0].out_channels, convs[0].kernel_size, convs[0].stride) == (
        100,
        512,
        (4, 4),
        (1, 1),
    )
    assert [c.out_channels for c in convs] == [512, 256, 128, 64, 3]
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) and c.output_padding == (1, 1) for c in convs[1:])
    dconvs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in dconvs] == [64, 128, 256, 512, 1]
    assert dconvs[-1].kernel_size == (4, 4)
    # no BatchNorm straight after D's first conv; LeakyReLU slope 0.2
    assert isinstance(d.net[1], nn.LeakyReLU) and d.net[1].negative_slope == 0.2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 3
    assert isinstance(g.net[-1], nn.Tanh)


def test_tutorial_layout_kernel4():
    g, _ = build_models(ModelConfig(arch="tutorial"))
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert all(c.kernel_size == (4, 4) and c.padding == (1, 1) for c in convs[1:])


def test_channels_follow_width():
    assert channels(ModelConfig(resolution=128, width=32)) == [512, 256, 128, 64, 32]


def test_dcgan_init_statistics():
    torch.manual_seed(0)
    g, d = build_models(ModelConfig())
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.02) < 5e-4
    gam = torch.cat([m.weight for m in d.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(gam.mean().item() - 1) < 5e-3 and abs(gam.std().item() - 0.02) < 5e-3
    assert all((m.bias == 0).all() for m in g.modules() if isinstance(m, nn.BatchNorm2d))


def test_default_init_differs():
    torch.manual_seed(0)
    g, _ = build_models(ModelConfig(init="default"))
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert abs(w.std().item() - 0.02) > 5e-3


@pytest.mark.slow
def test_backward_reaches_every_parameter():
    g, d = build_models(ModelConfig(resolution=32, width=8))
    d(g(torch.randn(4, 100))).sum().backward()
    for m in (g, d):
        for name, p in m.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_bad_inputs_name_the_problem():
    g, d = build_models(ModelConfig(resolution=32, width=8))
    with pytest.raises(ValueError, match=r"\(N, 100\)"):
        g(torch.randn(2, 99))
    with pytest.raises(ValueError, match="32, 32"):
        d(torch.randn(2, 3, 64, 64))
    for bad in (0, -64, 48, 512):
        with pytest.raises(ConfigError, match="model.resolution"):
            ModelConfig(resolution=bad).validate()


@pytest.mark.slow
def test_spectral_norm_constrains_top_singular_value():
    torch.manual_seed(0)
    d = DCGANDiscriminator(ModelConfig(resolution=32, width=8, spectral_norm=True, d_norm="none"))
    d.train()
    for _ in range(30):  # power iterations run in train-mode forwards
        d(torch.randn(2, 3, 32, 32))
    d.eval()
    for m in d.modules():
        if isinstance(m, nn.Conv2d):
            w = m.weight.flatten(1)  # the normalised weight
            s = torch.linalg.matrix_norm(w, ord=2)
            assert abs(s.item() - 1.0) < 0.05


def test_recalibrate_batchnorm_matches_batch_statistics():
    torch.manual_seed(0)
    g = DCGANGenerator(ModelConfig(resolution=32, width=8, z_dim=16))
    bn = g.net[1]
    bn.running_mean.fill_(5.0)
    recalibrate_batchnorm(g, batches=2, batch_size=64, seed=1)
    # Expected: the mean over the same 128 noise vectors of the first conv's output.
    rng = torch.Generator().manual_seed(1)
    zs = torch.cat([torch.randn(64, 16, generator=rng) for _ in range(2)])
    with torch.no_grad():
        h = g.net[0](zs[:, :, None, None])
    torch.testing.assert_close(bn.running_mean, h.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1  # restored
