import math

import pytest
import torch

from fakefacegen.augment import color, cutout, diff_augment, translation
from fakefacegen.losses import d_loss, g_loss, gradient_penalty
from fakefacegen.train import update_ema


def _bce(logit, target):
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_bce_losses_against_hand_computation():
    r, f = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    want = (_bce(2, 1) + _bce(-1, 1)) / 2 + (_bce(0.5, 0) + _bce(-3, 0)) / 2
    assert d_loss(r, f, "bce").item() == pytest.approx(want, rel=1e-6)
    # two-sided label smoothing 0.9 / 0.1
    want = (_bce(2, 0.9) + _bce(-1, 0.9)) / 2 + (_bce(0.5, 0.1) + _bce(-3, 0.1)) / 2
    assert d_loss(r, f, "bce", real_label=0.9, fake_label=0.1).item() == pytest.approx(want, rel=1e-6)
    assert g_loss(f, "bce").item() == pytest.approx((_bce(0.5, 1) + _bce(-3, 1)) / 2, rel=1e-6)


def test_bce_is_stable_for_extreme_logits():
    assert torch.isfinite(d_loss(torch.tensor([200.0]), torch.tensor([-200.0]))).all()
    assert g_loss(torch.tensor([-200.0])).item() == pytest.approx(200.0, rel=1e-4)


def test_hinge_and_lsgan_values():
    r, f = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert d_loss(r, f, "hinge").item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert g_loss(f, "hinge").item() == pytest.approx(1.0)
    assert d_loss(r, f, "lsgan").item() == pytest.approx(0.5 * (1 + 0.25) / 2 + 0.5 * (4 + 0) / 2)
    assert g_loss(f, "lsgan").item() == pytest.approx(0.5 * (9 + 1) / 2)


def test_rpgan_values_against_hand_computation():
    """Relativistic pairing: D pays -log sigmoid(D(x_i) - D(G(z_i))), G the mirror image, pair by pair."""
    r, f = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])

    def nll(diff):  # -log sigmoid(diff)
        return math.log1p(math.exp(-diff))

    assert d_loss(r, f, "rpgan").item() == pytest.approx((nll(2 - 0.5) + nll(-1 + 3)) / 2, rel=1e-6)
    assert g_loss(f, "rpgan", real=r).item() == pytest.approx((nll(0.5 - 2) + nll(-3 + 1)) / 2, rel=1e-6)
    # only the difference matters: shifting every logit leaves both losses unchanged
    assert d_loss(r + 7, f + 7, "rpgan").item() == pytest.approx(d_loss(r, f, "rpgan").item(), rel=1e-6)
    with pytest.raises(ValueError, match="needs D's logits on real images"):
        g_loss(f, "rpgan")


def test_rpgan_step_uses_the_updated_d_on_real_images_in_the_g_phase():
    """GANStep with train.loss=rpgan: the D phase's loss is rpgan on the D before its update, and the G
    phase compares D(G(z)) with the *updated* D's logits on the same real images."""
    import torch.nn.functional as F

    from fakefacegen.config import TrainConfig
    from fakefacegen.gan_step import GANStep

    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(4, 3 * 8 * 8), torch.nn.Tanh(), torch.nn.Unflatten(1, (3, 8, 8)))
    D = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.LeakyReLU(0.2), torch.nn.Flatten(), torch.nn.Linear(144, 1)
    )
    opt_g, opt_d = torch.optim.Adam(G.parameters(), 1e-2), torch.optim.Adam(D.parameters(), 1e-2)
    cfg = TrainConfig(loss="rpgan", batch_size=5)
    step = GANStep(G, D, opt_g, opt_d, torch.amp.GradScaler("cpu", enabled=False), torch.enable_grad, cfg)
    real, z = torch.rand(5, 3, 8, 8) * 2 - 1, torch.randn(5, 4)
    with torch.no_grad():
        want_d = F.softplus(D(G(z)) - D(real)).mean()
    fake, out = step.d_phase(0, real, z, lambda x: x)
    assert out["loss_d"].item() == pytest.approx(want_d.item(), rel=1e-6)
    with torch.no_grad():  # D has stepped; G has not yet
        want_g = F.softplus(D(real) - D(fake)).mean()
    g0 = [p.detach().clone() for p in G.parameters()]
    loss_g = step.g_phase(fake, lambda x: x, real=real)
    assert loss_g.item() == pytest.approx(want_g.item(), rel=1e-6)
    assert all(not torch.equal(a, b) for a, b in zip(g0, G.parameters()))  # G moved
    assert all(p.requires_grad for p in D.parameters())  # D is trainable again after the G phase


@pytest.mark.slow
def test_r1_matches_finite_differences():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.LazyLinear(1))
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    net = net.double()
    net(x)
    xr = x.clone().requires_grad_(True)
    got = gradient_penalty(net(xr).flatten(), xr).item()
    eps, total = 1e-6, 0.0
    for i in range(2):
        grad = torch.zeros_like(x[i])
        for idx in range(x[i].numel()):
            e = torch.zeros(x[i].numel(), dtype=torch.float64)
            e[idx] = eps
            e = e.view_as(x[i])
            grad.view(-1)[idx] = (net((x[i] + e)[None]) - net((x[i] - e)[None])).item() / (2 * eps)
        total += grad.pow(2).sum().item()
    assert got == pytest.approx(total / 2, rel=1e-5)


@pytest.mark.parametrize("fn", [color, translation, cutout])
def test_diffaugment_keeps_shape_is_differentiable_and_seeded(fn):
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    x.requires_grad_(True)
    y = fn(x, torch.Generator().manual_seed(3))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    y2 = fn(x.detach(), torch.Generator().manual_seed(3))
    torch.testing.assert_close(y.detach(), y2)


def test_translation_and_cutout_keep_range_and_move_pixels():
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    for fn in (translation, cutout):
        y = fn(x, torch.Generator().manual_seed(0))
        assert y.min() >= -1 and y.max() <= 1
        assert not torch.equal(x, y)
    # cutout zeroes a 8x8 square (possibly clipped by the border) in each image
    y = cutout(torch.ones(8, 3, 16, 16), torch.Generator().manual_seed(0))
    zeros = (y[:, 0] == 0).flatten(1).sum(1)
    assert ((zeros > 0) & (zeros <= 64)).all()


def test_translation_is_a_shift():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(1, 3, 1, 1)
    torch.manual_seed(0)
    for seed in range(20):
        y = translation(x, torch.Generator().manual_seed(seed), ratio=0.25)
        # every non-zero output value appears in the input, in a shifted copy of a row/col
        vals = set(y[y != 0].tolist())
        assert vals <= set(x.flatten().tolist())


def test_empty_policy_is_identity():
    x = torch.randn(2, 3, 8, 8)
    assert diff_augment(x, "") is x


def test_ema_update_arithmetic():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        a.weight.fill_(1.0)
        b.weight.fill_(3.0)
    update_ema(a, b, 0.9)
    torch.testing.assert_close(a.weight, torch.full((2, 2), 0.9 * 1 + 0.1 * 3))
    update_ema(a, b, 0.0)  # decay 0: copy
    torch.testing.assert_close(a.weight, b.weight)
