"""Attribute directions: conditional edit vectors (edited attributes move by their amount, kept ones by
0, the shortest such step), the boundary fit recovers a planted direction, directions found on a real
generator move a measurable attribute, the file round-trips, and bad names/files are one-line errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fakefacegen.directions import (
    MAX_GRAM_CONDITION,
    Directions,
    DirectionsError,
    directions_path,
    find_directions,
    fit_normal,
    measure_edits,
    weights_hash,
)


def unit_rows(k: int, d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(k, d))
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def make_dirs(k: int = 4, d: int = 12, seed: int = 0, sigmas: np.ndarray | None = None) -> Directions:
    names = [f"A{i}" for i in range(k)]
    s = np.linspace(0.5, 2.0, k) if sigmas is None else sigmas
    return Directions("z", names, unit_rows(k, d, seed), s, np.zeros(k), {"not_offered": {"Bald": "too rare"}})


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 10_000),
    st.lists(st.floats(-4, 4).filter(lambda x: abs(x) > 1e-3), min_size=1, max_size=3),
    st.integers(0, 2),
)
def test_conditional_vector_moves_edited_by_their_amount_and_kept_by_zero(seed, amounts, n_keep):
    dirs = make_dirs(6, 16, seed)
    attrs = {f"A{i}": a for i, a in enumerate(amounts)}
    keep = [f"A{5 - i}" for i in range(n_keep)]
    rows = dirs.normals[[dirs.attributes.index(n) for n in list(attrs) + keep]].astype(np.float64)
    if np.linalg.cond(rows @ rows.T) > MAX_GRAM_CONDITION:  # nearly parallel: refused, never a huge step
        with pytest.raises(DirectionsError, match="nearly parallel"):
            dirs.vector(attrs, keep)
        return
    v = dirs.vector(attrs, keep)
    proj = dirs.normals.astype(np.float64) @ v
    for i, a in enumerate(amounts):
        assert proj[i] == pytest.approx(a * dirs.sigmas[i], abs=1e-4)
    for k in keep:
        assert proj[dirs.attributes.index(k)] == pytest.approx(0.0, abs=1e-4)
    # the shortest such step: v lies in the span of the normals involved
    resid = v - rows.T @ np.linalg.lstsq(rows.T, v, rcond=None)[0]
    assert np.abs(resid).max() < 1e-4


def test_one_attribute_alone_is_amount_times_sigma_along_its_normal():
    dirs = make_dirs()
    np.testing.assert_allclose(dirs.vector({"A2": -1.5}), -1.5 * dirs.sigmas[2] * dirs.normals[2], rtol=1e-5)
    np.testing.assert_array_equal(dirs.vector({"A2": 0.0, "A1": 0}), np.zeros(12, np.float32))


def test_keeping_one_attribute_is_interfacegans_projection_rescaled():
    dirs = make_dirs()
    n1, n2 = dirs.normals[0].astype(np.float64), dirs.normals[1].astype(np.float64)
    proj = n1 - (n1 @ n2) * n2
    v = dirs.vector({"A0": 2.0}, ["A1"])
    np.testing.assert_allclose(v, proj * (2.0 * dirs.sigmas[0] / (proj @ n1)), rtol=1e-4, atol=1e-6)


def test_bad_names_and_impossible_keeps_are_one_line_errors():
    dirs = make_dirs()
    with pytest.raises(DirectionsError, match=r"^--attr Smiling: unknown attribute; offered: A0, A1, A2, A3$"):
        dirs.vector({"Smiling": 1.0})
    with pytest.raises(DirectionsError, match=r"^--keep Bald: not offered for this model \(too rare\)$"):
        dirs.vector({"A0": 1.0}, ["Bald"])
    with pytest.raises(DirectionsError, match="--keep A0: it is also edited with --attr"):
        dirs.vector({"A0": 1.0}, ["A0"])
    with pytest.raises(DirectionsError, match="--attr A0: the amount must be a finite number"):
        dirs.vector({"A0": float("nan")})
    par = dataclasses.replace(make_dirs(), _cache={})
    par.normals[1] = par.normals[0] * 0.95 + par.normals[2] * 0.3
    par.normals[1] /= np.linalg.norm(par.normals[1])
    with pytest.raises(DirectionsError, match=r"directions of A0 and A1 are nearly parallel \(cosine 0.9\d\)"):
        par.vector({"A0": 1.0}, ["A1"])


# the first L-BFGS step of a process costs about 5 s (torch imports its compiler stack once)
@pytest.mark.parametrize("method", ["regression", pytest.param("logistic", marks=pytest.mark.slow)])
def test_fit_recovers_a_planted_direction(method):
    rng = np.random.default_rng(0)
    d = 20
    true = unit_rows(1, d, 3)[0]
    codes = rng.normal(size=(3000, d)) * np.linspace(0.5, 2, d)  # anisotropic, as W is
    logit = 3 * (codes @ true - 0.4) + rng.normal(size=3000) * 0.5
    normal, offset = fit_normal(codes, logit, method)
    assert np.linalg.norm(normal) == pytest.approx(1.0, abs=1e-5)
    assert normal @ true > 0.97
    assert -offset == pytest.approx(0.4, abs=0.15)  # the boundary n.x + offset = 0 sits at x.true = 0.4
    with pytest.raises(DirectionsError, match="--method must be 'regression' or 'logistic'"):
        fit_normal(codes, logit, "svm")


def test_file_round_trip_and_malformed_files(tmp_path):
    dirs = make_dirs()
    dirs.info["model"] = {"weights_sha1": "abc"}
    dirs.info["attributes"] = {"A0": {"measured": {"cross_up": 0.9}}}
    p = tmp_path / "d.json"
    dirs.save(p)
    back = Directions.load(p)
    assert back.attributes == dirs.attributes and back.space == "z"
    np.testing.assert_allclose(back.normals, dirs.normals, atol=1e-6)
    np.testing.assert_allclose(back.sigmas, dirs.sigmas)
    assert (
        back.info["attributes"]["A0"] == {"measured": {"cross_up": 0.9}} and back.info["model"]["weights_sha1"] == "abc"
    )
    with pytest.raises(DirectionsError, match=f"^{tmp_path / 'none.json'}: no directions file for this model"):
        Directions.load(tmp_path / "none.json")
    p.write_text("{")
    with pytest.raises(DirectionsError, match="not a readable directions file"):
        Directions.load(p)
    p.write_text(json.dumps({"format": "other"}))
    with pytest.raises(DirectionsError, match="not a FakeFaceGen directions file"):
        Directions.load(p)
    good = dirs.to_json()
    good["attributes"]["A1"]["sigma"] = 0
    p.write_text(json.dumps(good))
    with pytest.raises(DirectionsError, match="NaN/Inf values or a sigma <= 0"):
        Directions.load(p)
    del good["attributes"]["A1"]["normal"]
    p.write_text(json.dumps(good))
    with pytest.raises(DirectionsError, match="missing or malformed attribute entries"):
        Directions.load(p)
    # malformed header fields: the same one-line DirectionsError naming the file, not ValueError/AttributeError
    for key, value, message in (
        ("format_version", "x", "format_version must be an integer, got 'x'"),
        ("format_version", [1], "format_version must be an integer"),
        ("format_version", 2, "directions format 2 is newer than this FakeFaceGen reads"),
        ("model", "abc", "'model' must be a mapping, got str"),
        ("not_offered", ["Bald"], "'not_offered' must be a mapping, got list"),
    ):
        p.write_text(json.dumps({**dirs.to_json(), key: value}))
        with pytest.raises(DirectionsError, match=f"^{p}: {message}"):
            Directions.load(p)


def test_default_path_is_next_to_the_model():
    assert directions_path("/x/assets/celeba64.safetensors").as_posix() == "/x/assets/celeba64-directions.json"


class BrightnessClassifier:
    """A stand-in classifier: 'Bright' = mean brightness above 0.45, 'Red' = red above blue, 'Coin' = noise."""

    attributes = ["Bright", "Red", "Coin", "Blurry"]
    report = {a: {"auc": 0.95} for a in ("Bright", "Red", "Coin")} | {"Blurry": {"auc": 0.6}}

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        im = np.asarray(images, np.float32) / 255
        b = im.mean((1, 2, 3))
        r = im[..., 0].mean((1, 2)) - im[..., 2].mean((1, 2))
        coin = np.random.default_rng(int(im.sum() * 1000) % 2**32).normal(size=len(im))
        return (1 / (1 + np.exp(-np.stack([(b - 0.45) * 20, (r - 0.08) * 30, coin, coin], 1)))).astype(np.float32)


@pytest.fixture(scope="module")
def G():
    from fakefacegen.generate import load_generator

    torch.set_num_threads(1)
    return load_generator()


@pytest.mark.slow
def test_directions_found_on_the_bundled_model_move_their_attribute(G):
    clf = BrightnessClassifier()
    dirs = find_directions(G, clf, n=600, n_measure=200)
    assert dirs.attributes == ["Bright", "Red"] and dirs.space == "z" and dirs.dim == 100
    assert "cannot tell it apart (held-out AUC 0.60 < 0.85)" in dirs.info["not_offered"]["Blurry"]
    assert "no linear direction in z: correlation" in dirs.info["not_offered"]["Coin"]
    assert dirs.info["model"]["weights_sha1"] == weights_hash(G)
    assert dirs.info["attributes"]["Bright"]["boundary_balanced_accuracy"] > 0.8
    assert dirs.info["attributes"]["Bright"]["boundary_correlation"] > 0.8
    assert 0.8 < dirs.sigmas[0] < 1.2  # z is standard normal along any unit direction

    class Ident:
        def embed(self, imgs):
            return np.asarray(imgs, np.float32).mean((1, 2)) / 255  # 3-d "identity": the mean colour

    m = measure_edits(G, clf, dirs, n=150, identity=Ident(), keep={"Red": ["Bright"]})
    b = m["Bright"]
    assert (
        b["cross_up"] > 0.8 and b["cross_down"] > 0.8 and b["target_change_up"] > 0.2 > -0.2 > b["target_change_down"]
    )
    assert b["share_after_up"] > b["share_before"] > b["share_after_down"]
    assert b["most_moved_up"][0] == "Red" and 0 <= b["others_change_up"] < 0.5
    assert b["identity_up"] > 0 and 0 <= b["same_person_up"] <= 1
    assert m["Red"]["keep"] == ["Bright"] and m["Red"]["cross_up"] > 0.5
    assert abs(m["Red"]["kept_change_up"]["Bright"]) < abs(m["Red"]["target_change_up"]) / 3  # held (nearly) fixed
    assert "kept_change_up" not in b


def test_weights_hash_follows_the_weights(G):
    h = weights_hash(G)
    assert h == weights_hash(G) and len(h) == 40
    from fakefacegen.generate import LoadedGenerator

    other = LoadedGenerator(type(G.net)(G.net.cfg), "x")
    assert weights_hash(other) != h


@pytest.mark.slow
def test_the_style_family_edits_in_w(tmp_path):
    from fakefacegen.checkpoint import save_generator
    from fakefacegen.config import ModelConfig
    from fakefacegen.generate import load_generator
    from fakefacegen.stylegan import StyleGenerator

    torch.manual_seed(9)
    mc = ModelConfig(resolution=32, width=4, max_width=32, z_dim=16, arch="style")
    save_generator(StyleGenerator(mc).state_dict(), dataclasses.asdict(mc), tmp_path / "g.safetensors")
    g = load_generator(tmp_path / "g.safetensors")
    clf = BrightnessClassifier()
    dirs = find_directions(g, clf, n=400, n_measure=200, attributes=["Bright"])
    assert dirs.space == "w" and dirs.normals.shape == (1, 16)
    w = g.codes(200, 1)
    assert dirs.sigmas[0] == pytest.approx(float((w.numpy() @ dirs.normals[0]).std()), rel=0.2)  # W's own spread
    m = measure_edits(g, clf, dirs, n=100)["Bright"]
    assert m["target_change_up"] > 0 > m["target_change_down"]
    assert m["share_after_up"] > m["share_before"] > m["share_after_down"]
    assert "others_change_up" not in m  # one attribute offered: nothing else to move
