"""The style family (stylegan.py): shapes at every resolution, the modulated convolution against the
paper's per-sample weights, minibatch stddev, truncation, loading, training and resume."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fakefacegen.checkpoint import list_checkpoints, load_checkpoint, save_generator
from fakefacegen.config import ConfigError, ModelConfig, make_config
from fakefacegen.generate import load_generator, noise
from fakefacegen.models import build_models
from fakefacegen.stylegan import (
    ModulatedConv2d,
    PixelNoise,
    ResidualDiscriminator,
    StyleGenerator,
    minibatch_stddev,
    style_channels,
)
from fakefacegen.train import Trainer

STYLE = ["model.arch=style"]


def tiny(res: int = 32, **kw) -> ModelConfig:
    mc = ModelConfig(resolution=res, width=4, max_width=32, z_dim=16, arch="style", **kw)
    mc.validate()
    return mc


@pytest.mark.parametrize("res", [32, 64, 128, 256])
def test_shapes_at_every_resolution(res):
    torch.manual_seed(0)
    g, d = build_models(tiny(res))
    assert isinstance(g, StyleGenerator) and isinstance(d, ResidualDiscriminator)
    x = g(torch.randn(4, 16))
    assert x.shape == (4, 3, res, res) and torch.isfinite(x).all()
    logits = d(x)
    assert logits.shape == (4,) and torch.isfinite(logits).all()
    # One synthesis block per resolution from 4x4 up, one D block per halving down to 4x4.
    n = int(math.log2(res)) - 1
    assert len(g.blocks) == n and len(d.blocks) == n - 1


def test_channels_double_per_halving_up_to_the_cap():
    mc = ModelConfig(resolution=64, width=32, max_width=256, arch="style")
    assert style_channels(mc) == {4: 256, 8: 256, 16: 128, 32: 64, 64: 32}


def test_modulated_conv_equals_per_sample_weights():
    """The non-grouped form equals the paper's: per-sample weights W'_oik = s_i W_oik, demodulated
    to sum_{i,k} W'^2 = 1 per output channel, one convolution per sample."""
    torch.manual_seed(1)
    layer = ModulatedConv2d(6, 5, 3, 8)
    x, w = torch.randn(3, 6, 7, 7), torch.randn(3, 8)
    got = layer(x, w)
    s = layer.affine(w)
    expect = []
    for n in range(3):
        wt = layer.weight * layer.gain * s[n][None, :, None, None]
        wt = wt / wt.square().sum((1, 2, 3), keepdim=True).add(1e-8).sqrt()
        y = F.conv2d(x[n : n + 1], wt, padding=1) + layer.bias[None, :, None, None]
        expect.append(F.leaky_relu(y, 0.2) * math.sqrt(2))
    torch.testing.assert_close(got, torch.cat(expect), rtol=1e-5, atol=1e-5)


def test_demodulation_gives_unit_variance_outputs():
    torch.manual_seed(2)
    layer = ModulatedConv2d(64, 64, 3, 16, act=False)
    with torch.no_grad():
        y = layer(torch.randn(8, 64, 16, 16), torch.randn(8, 16) * 3)
    assert 0.8 < y[:, :, 1:-1, 1:-1].std().item() < 1.2  # whatever the styles' scale


def test_minibatch_stddev_matches_a_direct_computation_and_shards():
    torch.manual_seed(3)
    x = torch.randn(8, 5, 4, 4)
    y = minibatch_stddev(x)
    assert y.shape == (8, 6, 4, 4) and torch.equal(y[:, :5], x)
    for grp in range(2):
        rows = x[4 * grp : 4 * grp + 4]
        expect = rows.var(0, unbiased=False).add(1e-8).sqrt().mean()
        torch.testing.assert_close(y[4 * grp : 4 * grp + 4, 5], expect.expand(4, 4, 4))
    # Two processes holding 4 rows each compute what one process holding all 8 does.
    torch.testing.assert_close(torch.cat([minibatch_stddev(x[:4]), minibatch_stddev(x[4:])]), y)


def test_psi_one_is_untruncated_and_psi_zero_is_the_average_face():
    torch.manual_seed(4)
    g = StyleGenerator(tiny()).eval()
    g.compute_w_avg(n=512)
    z = torch.randn(6, 16)
    with torch.no_grad():
        assert torch.equal(g(z), g(z, psi=1.0))
        avg = g(z, psi=0.0)
        half = g(z, psi=0.5)
        full = g(z)
    assert (avg - avg[:1]).abs().max() < 1e-5  # every latent lands on w_avg
    # psi moves the faces towards the average one, monotonically on average.
    assert (half - avg).abs().mean() < (full - avg).abs().mean()


def test_pixel_noise_is_white_across_faces_yet_a_function_of_w():
    """The maps of faces whose w share a common direction (a trained mapping network's do: their projected
    maps correlate by ~0.18) are nearly uncorrelated, with zero mean and unit variance; the same w gives the
    same map."""
    torch.manual_seed(11)
    noise = PixelNoise(64, 32, seed=3)
    w = 0.5 * torch.randn(1, 64) + torch.randn(128, 64)  # a fifth of every w's variance is shared
    maps = noise(w)
    assert maps.shape == (128, 1, 32, 32)
    flat = maps.flatten(1)
    corr = torch.corrcoef(flat)[~torch.eye(128, dtype=torch.bool)]
    assert abs(float(flat.mean())) < 0.02 and abs(float(flat.std()) - 1.0) < 0.02
    assert abs(float(corr.mean())) < 0.01 and float(corr.abs().mean()) < 0.05
    # Without the fold, the projection alone would carry the shared direction into every map.
    centred = w - w.mean(1, keepdim=True)
    linear = (centred * torch.rsqrt(centred.square().mean(1, keepdim=True))) @ noise.basis
    assert float(torch.corrcoef(linear)[~torch.eye(128, dtype=torch.bool)].mean()) > 0.1
    assert torch.equal(noise(w), maps) and torch.equal(PixelNoise(64, 32, seed=3).basis, noise.basis)
    assert not torch.equal(PixelNoise(64, 32, seed=4).basis, noise.basis)


@pytest.mark.parametrize("res", [32, 64])
def test_noise_inputs_start_silent_and_keep_faces_a_function_of_the_latent(res):
    """At initialisation (strengths 0) a G with noise inputs computes the plain G's images from the same
    weights; with the strengths on, the maps change the image, the same z gives the same face, and
    synthesis from W+ with one w repeated equals synthesis from w."""
    torch.manual_seed(12)
    plain = StyleGenerator(tiny(res)).eval()
    torch.manual_seed(12)
    noisy = StyleGenerator(tiny(res, noise_inputs=True)).eval()
    strengths = [k for k in noisy.state_dict() if k.endswith("noise_strength")]
    assert len(strengths) == 2 * len(noisy.blocks) - 1  # both convolutions of every block but the 4x4's first
    assert noisy.load_state_dict(plain.state_dict(), strict=False).unexpected_keys == []
    z = torch.randn(5, 16)
    with torch.no_grad():
        assert torch.equal(noisy(z), plain(z))
        for m in noisy.modules():
            if isinstance(m, ModulatedConv2d) and m.noise_strength is not None:
                m.noise_strength.fill_(0.7)
        a = noisy(z)
        assert (a - plain(z)).abs().mean() > 1e-3
        assert torch.equal(noisy(z), a)
        w = noisy.mapping(z)
        wplus = w[:, None].expand(-1, len(noisy.blocks), -1)
        torch.testing.assert_close(noisy.synthesis(wplus), a, rtol=0, atol=1e-6)
        noisy.compute_w_avg(n=256)
        assert torch.equal(noisy(z, psi=1.0), a)


def test_w_avg_is_the_mean_of_the_mapping_and_deterministic():
    torch.manual_seed(5)
    g = StyleGenerator(tiny())
    a = g.compute_w_avg(n=300, seed=7).clone()
    z = torch.randn(300, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(a, g.mapping(z).mean(0), rtol=1e-5, atol=1e-6)
    assert torch.equal(g.compute_w_avg(n=300, seed=7), a)


def test_style_only_options_are_checked():
    with pytest.raises(ConfigError, match="model.max_width"):
        ModelConfig(arch="style", max_width=0).validate()
    with pytest.raises(ConfigError, match="model.noise_inputs applies to the style family only"):
        ModelConfig(arch="tutorial", noise_inputs=True).validate()
    with pytest.raises(ConfigError, match="model.spectral_norm applies to the DCGAN"):
        ModelConfig(arch="style", spectral_norm=True).validate()
    with pytest.raises(ConfigError, match="model.arch must be one of reference, tutorial, style"):
        ModelConfig(arch="stylegan3").validate()


def test_load_generator_sets_w_avg_and_samples_deterministically(tmp_path):
    torch.manual_seed(6)
    mc = tiny()
    g = StyleGenerator(mc)
    path = tmp_path / "g.safetensors"
    save_generator(g.state_dict(), dataclasses.asdict(mc), path)  # w_avg stored as zeros
    G = load_generator(path)
    assert G.family == "style" and G.resolution == 32
    assert G.net.w_avg.abs().sum() > 0  # computed for these weights at load
    a, b = G.sample(5, seed=3), G.sample(5, seed=3)
    assert a.dtype == np.uint8 and a.shape == (5, 32, 32, 3) and np.array_equal(a, b)
    assert np.array_equal(G.sample(5, seed=3, psi=1.0), a)
    assert not np.array_equal(G.sample(5, seed=3, psi=0.5), a)
    # Image i of a seed does not depend on how many are drawn (no BatchNorm, no batch statistics).
    assert np.array_equal(G.sample(2, seed=3), a[:2])
    with pytest.raises(ValueError, match=r"--psi must be in \[0, 1\]"):
        G.sample(2, psi=1.5)


@pytest.mark.slow
def test_trains_and_exports_a_loadable_generator(dataset32, tmp_path):
    cfg = make_config(
        "debug",
        STYLE + ["train.steps=6", "train.ema=0.9", "train.r1_gamma=0.1", "train.r1_every=2", "train.r2_gamma=0.1"],
        data=str(dataset32),
    )
    run = Trainer(cfg, outdir=tmp_path, progress=False).run()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7))
    # The lazy penalties run on every 2nd step from the first (logged steps 1, 3, 5) and only there.
    due = [r["step"] % 2 == 1 for r in log]
    assert [r["r1"] > 0 for r in log] == due and [r["r2"] > 0 for r in log] == due
    G = load_generator(run / "generator.safetensors")
    assert G.family == "style"
    ck = load_checkpoint(list_checkpoints(run)[-1])
    torch.testing.assert_close(G.net.state_dict()["blocks.0.conv1.weight"], ck["G_ema"]["blocks.0.conv1.weight"])
    # w_avg in the exported file is the one load_generator computes for these weights.
    from safetensors.torch import load_file

    torch.testing.assert_close(load_file(run / "generator.safetensors")["w_avg"], G.net.w_avg)


@pytest.mark.slow
def test_r2_changes_the_discriminator_update(dataset32, tmp_path):
    base = STYLE + ["train.steps=2", "train.r1_every=2", "train.threads=1"]
    weights = []
    for r2 in (0.0, 10.0):
        cfg = make_config("debug", base + [f"train.r2_gamma={r2}"], data=str(dataset32))
        run = Trainer(cfg, outdir=tmp_path / f"r2-{r2}", progress=False).run()
        weights.append(load_checkpoint(list_checkpoints(run)[-1])["D"]["fromrgb.weight"])
    assert not torch.equal(*weights)


@pytest.mark.slow
@pytest.mark.parametrize("loss,noise_inputs", [("bce", False), ("rpgan", False), ("bce", True)])
def test_resume_continues_exactly(dataset32, tmp_path, loss, noise_inputs):
    torch.set_num_threads(1)
    cfg = make_config(
        "debug",
        STYLE
        + [
            f"model.noise_inputs={str(noise_inputs).lower()}",
            f"train.loss={loss}",
            "train.steps=6",
            "train.ckpt_every=2",
            "train.ema=0.9",
            "train.augment=color,translation,cutout",
            "train.r1_gamma=0.1",
            "train.r1_every=3",
            "train.r2_gamma=0.1",
        ],
        data=str(dataset32),
    )
    full = Trainer(cfg, outdir=tmp_path / "a", progress=False).run()
    part_dir = Trainer(cfg, outdir=tmp_path / "b", progress=False, stop_after=3).run()
    resumed = Trainer(resume=part_dir, progress=False).run()
    a, b = load_checkpoint(list_checkpoints(full)[-1]), load_checkpoint(list_checkpoints(resumed)[-1])
    assert a["step"] == b["step"] == 6
    for net in ("G", "D", "G_ema"):
        for k, v in a[net].items():
            assert torch.equal(v, b[net][k]), f"{net}.{k}"
    for key in ("opt_G", "opt_D"):
        for i, st in a[key]["state"].items():
            for name, v in st.items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(b[key]["state"][i][name])), f"{key} {i} {name}"
    la = [json.loads(x)["loss_d"] for x in (full / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss_d"] for x in (resumed / "log.jsonl").read_text().splitlines()]
    assert la == lb


def test_noise_rows_feed_the_family_like_the_dcgan():
    torch.manual_seed(8)
    g = StyleGenerator(tiny()).eval()
    z = noise(3, 16, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(g(z)[1:], g(z[1:]))


@pytest.fixture(scope="module")
def style_G(tmp_path_factory):
    torch.manual_seed(9)
    mc = tiny()
    path = tmp_path_factory.mktemp("styleG") / "g.safetensors"
    save_generator(StyleGenerator(mc).state_dict(), dataclasses.asdict(mc), path)
    return load_generator(path)


def test_interpolate_walks_end_on_the_sampled_faces(style_G):
    from fakefacegen.interpolate import interpolate

    walk = interpolate(style_G, [3, 8], 5, psi=0.7)
    assert walk.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(walk[0], style_G.sample(1, 3, psi=0.7)[0])
    np.testing.assert_array_equal(walk[-1], style_G.sample(1, 8, psi=0.7)[0])


def test_the_demo_serves_a_style_model(style_G):
    pytest.importorskip("starlette", reason="the demo extra is not installed")
    import io
    import urllib.request

    from PIL import Image

    from fakefacegen.demo.server import BackgroundServer, create_app
    from fakefacegen.images import make_grid

    with BackgroundServer(create_app(style_G)) as s:
        with urllib.request.urlopen(s.url + "/api/grid.png?seed=3&n=4") as r:
            grid = np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))
        with urllib.request.urlopen(s.url + "/api/model") as r:
            info = json.loads(r.read())
    np.testing.assert_array_equal(grid, make_grid(style_G.sample(4, 3)))
    assert info["resolution"] == 32 and info["params"] == sum(p.numel() for p in style_G.net.parameters())


@pytest.mark.slow
def test_bf16_autocast_path_trains(dataset32, tmp_path):
    """The CPU fast path on native-bf16 CPUs is bf16 autocast + channels_last: the family must train
    under it (here forced, whatever this CPU has) with finite losses and an R1 step."""
    cfg = make_config(
        "debug",
        STYLE
        + ["train.steps=2", "train.precision=bf16", "train.channels_last=on", "train.r1_gamma=0.1", "train.r1_every=2"],
        data=str(dataset32),
    )
    run = Trainer(cfg, outdir=tmp_path, progress=False).run()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in log) and log[0]["r1"] > 0


def test_saved_latents_give_back_the_sampled_faces(style_G, G, tmp_path, capsys):
    """generate --latent: W+ for the style family (as `project` saves it), z for the DCGAN; the face of a
    latent equals the face sampled from it, and a latent of the wrong shape is a one-line error."""
    from PIL import Image

    from fakefacegen import cli
    from fakefacegen.generate import noise

    z = noise(3, 16, seed=5)
    with torch.no_grad():
        w_plus = style_G.net.mapping(z)[:, None, :].repeat(1, len(style_G.net.blocks), 1).numpy()
    np.testing.assert_array_equal(style_G.synthesize_latents(w_plus), style_G.sample(3, seed=5))
    np.testing.assert_array_equal(style_G.synthesize_latents(w_plus[1]), style_G.sample(3, seed=5)[1:2])
    np.testing.assert_array_equal(G.synthesize_latents(z.numpy()[2]), G.sample(3, seed=5)[2:3])
    with pytest.raises(ValueError, match=r"me.npy: the latent has shape \(16,\); this style model takes W\+"):
        style_G.synthesize_latents(z.numpy()[0], source="me.npy")

    np.save(tmp_path / "me-latent.npy", w_plus[0])
    assert (
        cli.main(
            ["generate", style_G.source, "--latent", str(tmp_path / "me-latent.npy"), "--out", str(tmp_path / "out")]
        )
        == 0
    )
    face = np.asarray(Image.open(tmp_path / "out" / "me-latent.png").convert("RGB"))
    np.testing.assert_array_equal(face, style_G.sample(1, seed=5)[0])
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    assert cli.main(["generate", style_G.source, "--latent", str(tmp_path / "bad.npy"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.npy: not a readable .npy latent" in err and "\n" not in err
