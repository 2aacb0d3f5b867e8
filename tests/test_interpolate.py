"""Latent walks: slerp, the walk's noise and images, the animation/grid files, truncation, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fakefacegen.generate import noise
from fakefacegen.interpolate import interpolate, parse_seeds, save_animation, segment_rows, slerp, walk_latents

MODULE = "fakefacegen.commands.interpolate"


def run_cli(argv: list[str]) -> int:
    """The console command, in process."""
    from fakefacegen import cli

    assert MODULE in cli.COMMANDS
    return cli.main(argv)


# ---------------------------------------------------------------------------------------------- slerp


def _angle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.arccos((u @ v / (u.norm() * v.norm())).clamp(-1, 1))


def test_slerp_endpoints_are_exact():
    rng = torch.Generator().manual_seed(1)
    a, b = torch.randn(100, generator=rng) * 3, torch.randn(100, generator=rng) * 0.5
    out = slerp(a, b, torch.tensor([0.0, 1.0]))
    assert torch.equal(out[0], a) and torch.equal(out[1], b)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1), b)
    assert out.dtype == torch.float32


def test_slerp_interpolates_norm_linearly_and_angle_uniformly():
    rng = torch.Generator().manual_seed(2)
    a, b = torch.randn(64, generator=rng, dtype=torch.float64) * 2, torch.randn(64, generator=rng, dtype=torch.float64)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    out = slerp(a, b, t)
    assert out.shape == (11, 64)
    torch.testing.assert_close(out.norm(dim=1), (1 - t) * a.norm() + t * b.norm())
    omega = _angle(a, b)
    for ti, v in zip(t, out):
        # on the great circle through a and b: angle to a is t * omega, angle to b is (1 - t) * omega
        torch.testing.assert_close(_angle(v, a), ti * omega, atol=1e-6, rtol=0)
        torch.testing.assert_close(_angle(v, b), (1 - ti) * omega, atol=1e-6, rtol=0)


def test_slerp_orthogonal_vectors_match_closed_form():
    rng = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(32, 2, generator=rng, dtype=torch.float64))
    a, b = 1.7 * q[:, 0], 1.7 * q[:, 1]
    assert abs(float(a @ b)) < 1e-12
    t = torch.rand(20, generator=rng, dtype=torch.float64)
    expected = torch.cos(t * math.pi / 2)[:, None] * a + torch.sin(t * math.pi / 2)[:, None] * b
    torch.testing.assert_close(slerp(a, b, t), expected)
    # midpoint of two orthogonal unit vectors is their normalised sum, not the shorter lerp midpoint
    e1, e2 = torch.eye(2, dtype=torch.float64)
    torch.testing.assert_close(slerp(e1, e2, 0.5), (e1 + e2) / math.sqrt(2))


@pytest.mark.parametrize("case", ["parallel", "nearly_parallel", "antiparallel", "zero"])
def test_slerp_degenerate_vectors_fall_back_to_lerp(case):
    rng = torch.Generator().manual_seed(4)
    a = torch.randn(16, generator=rng, dtype=torch.float64)
    b = {
        "parallel": 2.5 * a,
        "nearly_parallel": a + 1e-12 * torch.randn(16, generator=rng, dtype=torch.float64),
        "antiparallel": -a,
        "zero": torch.zeros(16, dtype=torch.float64),
    }[case]
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    out = slerp(a, b, t)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, (1 - t)[:, None] * a + t[:, None] * b)


def test_slerp_broadcasts_batches_and_rejects_mismatched_lengths():
    rng = torch.Generator().manual_seed(5)
    a, b = torch.randn(4, 8, generator=rng), torch.randn(4, 8, generator=rng)
    out = slerp(a, b, 0.3)
    assert out.shape == (4, 8)
    for i in range(4):
        torch.testing.assert_close(out[i], slerp(a[i], b[i], 0.3))
    with pytest.raises(ValueError, match="different lengths"):
        slerp(torch.zeros(3), torch.zeros(4), 0.5)


# ---------------------------------------------------------------------------------------------- the walk


@pytest.mark.parametrize("loop", [False, True])
def test_walk_latents_layout(loop):
    seeds, frames = [5, 9, 2], 6
    z = walk_latents(16, seeds, frames, loop=loop)
    segments = len(seeds) if loop else len(seeds) - 1
    assert z.shape == (segments * (frames - 1) + (0 if loop else 1), 16)
    for k, s in enumerate(seeds):
        assert torch.equal(z[k * (frames - 1)], noise(1, 16, s)[0])
    # one segment is the slerp between its endpoints at t = j / (frames - 1)
    t = torch.arange(frames - 1, dtype=torch.float64) / (frames - 1)
    torch.testing.assert_close(
        z[frames - 1 : 2 * (frames - 1)], slerp(noise(1, 16, 9)[0], noise(1, 16, 2)[0], t).float()
    )


def test_walk_rejects_bad_arguments():
    with pytest.raises(ValueError, match="frames"):
        walk_latents(16, [1, 2], 1)
    with pytest.raises(ValueError, match="two seeds"):
        walk_latents(16, [1], 8)
    with pytest.raises(ValueError, match="--seeds"):
        parse_seeds("1,x")
    with pytest.raises(ValueError, match="--seeds"):
        parse_seeds("7")
    assert parse_seeds(" 1, 2,3 ") == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.parametrize("truncation", [None, 0.7])
def test_interpolation_endpoints_equal_the_seeds_samples(G, truncation):
    seeds, frames = [3, 11, 4], 5
    walk = interpolate(G, seeds, frames, truncation=truncation)
    assert walk.shape == (2 * (frames - 1) + 1, 32, 32, 3) and walk.dtype == np.uint8
    for k, s in enumerate(seeds):
        np.testing.assert_array_equal(walk[k * (frames - 1)], G.sample(1, s, truncation=truncation)[0])
    # frames in between are new faces, not copies of an endpoint
    assert not np.array_equal(walk[2], walk[0]) and not np.array_equal(walk[2], walk[frames - 1])


@pytest.mark.slow
def test_truncation_reduces_pixel_variance(G):
    full = G.sample(256, seed=0).astype(np.float64)
    trunc = G.sample(256, seed=0, truncation=0.5).astype(np.float64)
    v_full, v_trunc = full.var(axis=0).mean(), trunc.var(axis=0).mean()
    assert v_full > 10  # the samples do differ, so the comparison means something
    assert v_trunc < 0.5 * v_full
    # and the walk's noise honours it too
    assert walk_latents(16, [0, 1], 4, truncation=0.5)[[0, -1]].abs().max() <= 0.5


def test_segment_rows(G):
    walk = interpolate(G, [1, 2, 3], 4, loop=True)
    assert len(walk) == 9
    rows = segment_rows(walk, 4, loop=True)
    assert rows.shape == (3, 4, 32, 32, 3)
    np.testing.assert_array_equal(rows[2, -1], walk[0])  # the loop closes on the first seed
    np.testing.assert_array_equal(rows[1, 0], rows[0, -1])


# ---------------------------------------------------------------------------------------------- files


def _frames(path: Path, durations: list | None = None) -> list[np.ndarray]:
    with Image.open(path) as im:
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            out.append(np.asarray(im.convert("RGB")))
            if durations is not None:
                durations.append(im.info.get("duration"))
        return out


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_animation_decodes_with_every_frame(G, tmp_path, fmt):
    walk = interpolate(G, [1, 2, 3], 6)
    p = save_animation(walk, tmp_path / f"walk.{fmt}", fps=10)
    durations: list = []
    frames = _frames(p, durations)
    assert len(frames) == len(walk) == 11
    assert durations == [100] * 11  # 10 fps
    with Image.open(p) as im:
        assert im.format == fmt.upper() and im.size == (32, 32)
        assert im.info.get("loop") == 0  # repeats forever
    if fmt == "webp":  # written lossless
        np.testing.assert_array_equal(np.stack(frames), walk)
    # GIF has a 256-colour palette per frame: close to the frames, each closest to its own source
    for i, f in enumerate(frames):
        err = [np.abs(f.astype(int) - w).mean() for w in walk]
        assert err[i] < 12 and int(np.argmin(err)) == i
    with pytest.raises(ValueError, match="format"):
        save_animation(walk, tmp_path / "walk.mp4")


@pytest.mark.slow
def test_cli_writes_walk_and_grid(tiny_path, G, tmp_path, capsys):
    out = tmp_path / "walk"
    rc = run_cli(
        [
            "interpolate",
            str(tiny_path),
            "--seeds",
            "1,2,3",
            "--frames",
            "5",
            "--loop",
            "--truncation",
            "0.8",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert "walk.gif" in capsys.readouterr().out
    assert len(_frames(out / "walk.gif")) == 3 * 4
    grid = np.asarray(Image.open(out / "grid.png").convert("RGB"))
    assert grid.shape == (3 * 34 + 2, 5 * 34 + 2, 3)  # rows = segments, columns = frames, 2px padding
    # PNG is lossless: row r starts with seed r's face and ends with the next seed's
    cell = lambda r, c: grid[2 + 34 * r : 34 * (r + 1), 2 + 34 * c : 34 * (c + 1)]  # noqa: E731
    for r, (s, s_next) in enumerate([(1, 2), (2, 3), (3, 1)]):
        np.testing.assert_array_equal(cell(r, 0), G.sample(1, s, truncation=0.8)[0])
        np.testing.assert_array_equal(cell(r, 4), G.sample(1, s_next, truncation=0.8)[0])


def test_cli_webp_and_scale(tiny_path, tmp_path):
    out = tmp_path / "w"
    assert (
        run_cli(
            [
                "interpolate",
                str(tiny_path),
                "--seeds",
                "0,1",
                "--frames",
                "3",
                "--format",
                "webp",
                "--scale",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with Image.open(out / "walk.webp") as im:
        assert im.n_frames == 3 and im.size == (64, 64)
    assert Image.open(out / "grid.png").size == (3 * 66 + 2, 66 + 2)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--seeds", "1"], "--seeds"),
        (["--seeds", "1,a"], "--seeds"),
        (["--seeds", "1,2", "--frames", "1"], "frames"),
        (["--seeds", "1,2", "--scale", "0"], "--scale"),
        (["--seeds", "1,2", "--truncation", "-1"], "truncation"),
    ],
)
def test_cli_errors_are_one_line(tiny_path, tmp_path, capsys, argv, needle):
    rc = run_cli(["interpolate", str(tiny_path), *argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and needle in err and "\n" not in err


def test_cli_missing_model_names_the_path(tmp_path, capsys):
    missing = tmp_path / "nope.safetensors"
    assert run_cli(["interpolate", str(missing), "--seeds", "1,2", "--out", str(tmp_path / "o")]) == 2
    assert str(missing) in capsys.readouterr().err


def test_registered_in_fakefacegen_cli(tiny_path, tmp_path, capsys):
    """Passes once cli.COMMANDS lists this module."""
    from fakefacegen import cli

    with pytest.raises(SystemExit):
        cli.main(["interpolate", "--help"])
    assert "examples:" in capsys.readouterr().out
    assert (
        cli.main(["interpolate", str(tiny_path), "--seeds", "4,5", "--frames", "3", "--out", str(tmp_path / "c")]) == 0
    )
    assert (tmp_path / "c" / "walk.gif").is_file()


# ------------------------------------------------------------------- walks from saved latents


def test_parse_seeds_takes_latent_files():
    assert parse_seeds("me-latent.npy, 5,7") == [Path("me-latent.npy"), 5, 7]
    with pytest.raises(ValueError, match="seeds or latent files"):
        parse_seeds("1,me.png")


def test_walk_from_a_dcgan_latent_file_ends_on_its_face_and_the_seeds(G, tmp_path):
    lat = G.codes(1, 11, start=3)[0].cpu().numpy() * 0.9  # some z that is not a seed's first face
    np.save(tmp_path / "me-latent.npy", lat)
    walk = interpolate(G, [tmp_path / "me-latent.npy", 5, 8], frames=4)
    assert walk.shape == (7, 32, 32, 3)
    np.testing.assert_array_equal(walk[0], G.synthesize_latents(lat)[0])
    np.testing.assert_array_equal(walk[3], G.sample(1, 5)[0])
    np.testing.assert_array_equal(walk[6], G.sample(1, 8)[0])
    # spherical in z, as the seed walks: the middle frame is the slerp of the ends
    mid = slerp(torch.from_numpy(lat), G.codes(1, 5)[0].cpu(), torch.tensor([1 / 3]))
    np.testing.assert_array_equal(walk[1], G.synthesize(mid)[0])


def test_walk_from_a_style_w_plus_latent_is_straight_in_w(style_G, tmp_path):
    G = style_G
    blocks = len(G.net.blocks)
    w_plus = G.codes(1, 2)[:, None].expand(-1, blocks, -1).clone()
    w_plus[:, 0] += 0.5  # a W+ latent whose blocks differ, as a projected photo's do
    np.save(tmp_path / "p-latent.npy", w_plus[0].numpy())
    walk = interpolate(G, [tmp_path / "p-latent.npy", 6], frames=5, loop=True)
    assert walk.shape == (8, 32, 32, 3)  # two segments, the closing frame left out
    # within one level of 255: the walk renders W+ in one batch of 8, sample() renders w alone
    np.testing.assert_allclose(walk[0].astype(int), G.synthesize_latents(w_plus[0].numpy())[0].astype(int), atol=1)
    np.testing.assert_allclose(walk[4].astype(int), G.sample(1, 6)[0].astype(int), atol=1)
    assert np.abs(walk[4].astype(int) - G.sample(1, 2)[0].astype(int)).max() > 8  # and not some other face
    halfway = w_plus + 0.5 * (G.codes(1, 6)[:, None] - w_plus)
    np.testing.assert_allclose(walk[2].astype(int), G.render(halfway)[0].astype(int), atol=1)


def test_walk_latent_file_errors_are_one_line(G, tiny_path, tmp_path, capsys):
    np.save(tmp_path / "two-latent.npy", np.zeros((2, G.z_dim), np.float32))
    np.save(tmp_path / "bad-latent.npy", np.zeros((G.z_dim + 1,), np.float32))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    cases = [
        ("two-latent.npy", "holds 2 latents"),
        ("bad-latent.npy", f"has shape ({G.z_dim + 1},)"),
        ("junk.npy", "not a readable .npy latent"),
        ("missing.npy", "cannot read the latent"),
    ]
    for name, needle in cases:
        argv = ["interpolate", str(tiny_path), "--seeds", f"{tmp_path / name},1", "--out", str(tmp_path / "o")]
        assert run_cli(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and needle in err and name in err and "\n" not in err, err
    assert not (tmp_path / "o").exists()
