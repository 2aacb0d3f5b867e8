"""Editing faces: latents of seeds render the sampled faces (both families), an edit adds the direction's
step to z, w or every block of W+, ``G.edit`` and ``fakefacegen edit`` produce the edited face and the
strips, directions made for other weights are refused, and bad flags are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fakefacegen.cli import main
from fakefacegen.directions import Directions, DirectionsError, weights_hash
from fakefacegen.editing import amounts, edit_latent, latent_for, parse_attrs, strip
from fakefacegen.generate import LoadedGenerator, load_generator


def random_dirs(G: LoadedGenerator, names=("Smiling", "Young", "Male"), seed: int = 0) -> Directions:
    a = np.random.default_rng(seed).normal(size=(len(names), G.z_dim))
    normals = (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)
    info = {"model": {"weights_sha1": weights_hash(G)}, "not_offered": {"Bald": "too rare"}}
    return Directions(
        G.edit_space, list(names), normals, np.array([1.0, 0.8, 1.2][: len(names)]), np.zeros(len(names)), info
    )


@pytest.fixture(scope="module")
def G():
    torch.set_num_threads(1)
    return load_generator()


@pytest.fixture(scope="module")
def dirs_file(G, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("dirs") / "d.json"
    random_dirs(G).save(p)
    return p


@pytest.mark.parametrize("family", ["dcgan", "style"])
@pytest.mark.parametrize("psi, truncation", [(1.0, None), (0.6, None), (1.0, 0.7)])
def test_codes_render_the_sampled_faces(family, psi, truncation, G, style_G):
    g = G if family == "dcgan" else style_G
    codes = g.codes(3, seed=5, start=2, psi=psi, truncation=truncation)
    assert codes.shape == (3, g.z_dim) and g.edit_space == ("z" if family == "dcgan" else "w")
    np.testing.assert_array_equal(g.render(codes), g.sample(3, seed=5, start=2, psi=psi, truncation=truncation))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([(8,), (3, 8), (2, 5, 8)]), st.booleans(), st.floats(-3, 3))
def test_edit_latent_adds_the_step_to_every_row_and_block(shape, as_torch, amount):
    a = np.random.default_rng(1).normal(size=(2, 8))
    dirs = Directions(
        "w",
        ["A", "B"],
        (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32),
        np.array([1.5, 1.0]),
        np.zeros(2),
    )
    lat = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    x = torch.from_numpy(lat) if as_torch else lat
    out = edit_latent(dirs, x, {"A": amount})
    assert type(out) is type(x) and tuple(out.shape) == shape and out.dtype == x.dtype
    step = np.asarray(out) - lat
    np.testing.assert_allclose(
        step.reshape(-1, 8), np.broadcast_to(amount * 1.5 * dirs.normals[0], (step.size // 8, 8)), atol=1e-5
    )
    np.testing.assert_array_equal(np.asarray(edit_latent(dirs, x, {})), lat)
    with pytest.raises(DirectionsError, match="the latent's last dimension is 7; these directions are 8-d"):
        edit_latent(dirs, lat[..., :7], {"A": 1.0})


def test_g_edit_is_the_face_plus_the_step(G, dirs_file):
    face = G.sample(1, seed=3, start=4)[0]
    np.testing.assert_array_equal(G.edit(seed=3, index=4, attrs={}, directions=dirs_file), face)
    edited = G.edit(seed=3, index=4, attrs={"Smiling": 2.0}, directions=dirs_file)
    d = Directions.load(dirs_file)
    want = G.render(G.codes(1, 3, start=4) + torch.from_numpy(2.0 * d.sigmas[0] * d.normals[0]).float())[0]
    np.testing.assert_array_equal(edited, want)
    assert np.abs(edited.astype(int) - face).mean() > 1  # it changed the face
    kept = G.edit(seed=3, index=4, attrs={"Smiling": 2.0}, keep=["Male"], directions=dirs_file)
    assert kept.shape == face.shape and not np.array_equal(kept, edited)


def test_style_edits_move_every_block_of_w_plus(style_G, tmp_path):
    d = random_dirs(style_G)
    p = tmp_path / "d.json"
    d.save(p)
    base = latent_for(style_G, seed=1, index=2)
    assert base.shape == (1, 16)
    blocks = len(style_G.net.blocks)
    wplus = base[:, None].expand(1, blocks, 16).numpy()
    np.testing.assert_array_equal(
        style_G.edit(latent=wplus[0], attrs={"Young": 1.0}, directions=p),
        style_G.edit(seed=1, index=2, attrs={"Young": 1.0}, directions=p),
    )


def test_directions_of_other_weights_or_space_are_refused(G, style_G, tmp_path):
    d = random_dirs(G)
    d.info["model"]["weights_sha1"] = "0" * 40
    p = tmp_path / "other.json"
    d.save(p)
    with pytest.raises(DirectionsError, match=r"found for other weights \(000000000000\)"):
        G.edit(attrs={"Smiling": 1.0}, directions=p)
    d = random_dirs(style_G)
    d.info["model"]["weights_sha1"] = weights_hash(G)
    d.save(p)
    with pytest.raises(DirectionsError, match=r"directions in w \(16-d\), this model edits in z"):
        G.directions(p)


def test_strip_runs_from_minus_k_to_plus_k(G, dirs_file):
    d = G.directions(dirs_file)
    base = latent_for(G, seed=0, index=1)
    row = strip(G, d, base, "Smiling", 2.0, 5, others={"Young": 1.0})
    assert row.shape == (5, 64, 64, 3)
    np.testing.assert_array_equal(
        row[3], G.edit(seed=0, index=1, attrs={"Smiling": 1.0, "Young": 1.0}, directions=dirs_file)
    )
    np.testing.assert_allclose(amounts(2.0, 5), [-2, -1, 0, 1, 2])
    with pytest.raises(ValueError, match="--steps must be >= 2, got 1"):
        amounts(2.0, 1)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text("ABCXYZabcxyz_", min_size=1, max_size=12), st.floats(-9, 9), min_size=1, max_size=4))
def test_parse_attrs_round_trip(attrs):
    assert parse_attrs([f"{k}={v:+}" for k, v in attrs.items()]) == attrs


@pytest.mark.parametrize("bad", ["Smiling", "Smiling=", "=2", "Smiling=big", "Smiling=inf"])
def test_parse_attrs_errors(bad):
    with pytest.raises(ValueError, match=rf"^--attr '{bad}': expected NAME=AMOUNT, e.g. Smiling=\+2"):
        parse_attrs([bad])
    with pytest.raises(ValueError, match="--attr Smiling: given more than once"):
        parse_attrs(["Smiling=1", "Smiling=2"])


@pytest.mark.slow
def test_cli_edit_writes_the_face_the_edit_and_strips(G, dirs_file, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["edit", "--seed", "3", "--index", "4", "--attr", "Smiling=+2", "--attr", "Young=-1", "--keep", "Male"]
    assert main(argv + ["--directions", str(dirs_file), "--steps", "5", "--range", "2", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "seed3-00004.png",
            "seed3-00004-edit.png",
            "seed3-00004-strip-Smiling.png",
            "seed3-00004-strip-Young.png",
            "seed3-00004-edit.json",
        ]
    )
    np.testing.assert_array_equal(np.asarray(Image.open(out / "seed3-00004.png")), G.sample(1, seed=3, start=4)[0])
    want = G.edit(seed=3, index=4, attrs={"Smiling": 2.0, "Young": -1.0}, keep=["Male"], directions=dirs_file)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "seed3-00004-edit.png")), want)
    assert Image.open(out / "seed3-00004-strip-Smiling.png").size == (5 * 66 + 2, 68)
    rec = json.loads((out / "seed3-00004-edit.json").read_text())
    assert (
        rec["attrs"] == {"Smiling": 2.0, "Young": -1.0}
        and rec["keep"] == ["Male"]
        and rec["strip"] == [-2, -1, 0, 1, 2]
    )
    # a projected photo's latent (project's NAME-latent.npy: z for the DCGAN)
    z = G.codes(1, 3, start=4)[0].numpy()
    np.save(tmp_path / "me-latent.npy", z)
    assert (
        main(
            [
                "edit",
                "--latent",
                str(tmp_path / "me-latent.npy"),
                "--attr",
                "Smiling=2",
                "--attr",
                "Young=-1",
                "--keep",
                "Male",
                "--directions",
                str(dirs_file),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(np.asarray(Image.open(out / "me-edit.png")), want)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--attr", "Bald=1"], "--attr Bald: not offered for this model (too rare)"),
        (["--attr", "Smiling=1", "--keep", "Hat"], "--keep Hat: unknown attribute; offered: Smiling, Young, Male"),
        ([], "give at least one --attr NAME=AMOUNT"),
        (["--attr", "Smiling"], "--attr 'Smiling': expected NAME=AMOUNT"),
        (["--attr", "Smiling=1", "--steps", "1"], "--steps must be an integer in 2..33 (got 1)"),
        (["--attr", "Smiling=1", "--range", "0"], "--range must be a number in (0, 10] (got 0)"),
        (["--attr", "Smiling=1", "--psi", "2"], "--psi must be a number in [0, 1] (got 2)"),
        (["--attr", "Smiling=1", "--latent", "x.npy", "--index", "2"], "--latent and --index do not go together"),
        (
            ["--attr", "Smiling=1", "--latent", "{bad}"],
            "--latent {bad}: the latent has shape (3,); this dcgan model takes z (100,)",
        ),
        (["--attr", "Smiling=1", "--latent", "{missing}"], "--latent {missing}: cannot read the latent"),
    ],
)
def test_cli_edit_errors_are_one_line(args, message, dirs_file, tmp_path, capsys):
    bad, missing = tmp_path / "bad.npy", tmp_path / "missing.npy"
    np.save(bad, np.zeros(3, np.float32))
    args = [a.format(bad=bad, missing=missing) for a in args]
    out = tmp_path / "out"
    assert main(["edit", *args, "--directions", str(dirs_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message.format(bad=bad, missing=missing) in err
    assert not out.exists()  # nothing written


def test_cli_directions_usage_errors(capsys):
    for args, message in [
        (["--data", "d"], "--data and --labels go together"),
        (["--data", "d", "--labels", "l", "--classifier", "c"], "--classifier reads a trained classifier"),
        (["--save-classifier", "c"], "--save-classifier needs --data and --labels"),
        (["--n", "5"], "--n must be an integer in 100..1000000 (got 5)"),
    ]:
        assert main(["directions", *args]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_cli_directions_with_the_shipped_classifier(tmp_path, capsys):
    from fakefacegen.generate import bundled_model_path

    out = tmp_path / "d.json"
    assert main(["directions", str(bundled_model_path()), "--n", "300", "--measure", "0", "--out", str(out)]) == 0
    d = Directions.load(out)
    assert d.space == "z" and d.dim == 100 and "Smiling" in d.attributes
    assert d.info["fit"]["n"] == 300 and d.info["model"]["source"] == "celeba64.safetensors"
    assert f"wrote {out}" in capsys.readouterr().out


def test_the_bundled_directions_fit_the_bundled_model(G):
    from fakefacegen.directions import REQUIRED

    d = G.directions()
    assert set(REQUIRED) <= set(d.attributes), set(REQUIRED) - set(d.attributes)
    for a in REQUIRED:
        m = d.info["attributes"][a]["measured"]
        assert m["n"] == 1000 and m["cross_down"] > 0.5, (a, m)
        assert m["share_after_up"] > m["share_before"] + 0.05 > m["share_after_down"] + 0.05, (a, m)
        # attributes the model rarely draws (Eyeglasses 2.9%, Bald 0.2%): +2 carries fewer faces across
        assert m["cross_up"] > (0.05 if m["share_before"] < 0.05 else 0.6), (a, m)
    assert G.edit(seed=0, index=0, attrs={"Smiling": 2.0}).shape == (64, 64, 3)


@pytest.mark.slow
def test_cli_directions_trains_a_classifier_on_labelled_faces(tmp_path, capsys):
    from conftest import make_dataset_dir
    from fakefacegen.attributes import load_classifier
    from fakefacegen.generate import bundled_model_path

    ds = make_dataset_dir(tmp_path / "ds", n=90, size=32)
    (ds / "names.txt").write_text("".join(f"img/{i + 1:06d}.jpg\n" for i in range(90)))
    rows = [f"{i + 1:06d}.jpg " + " ".join("1" if (i + j) % 3 == 0 else "-1" for j in range(2)) for i in range(90)]
    (tmp_path / "labels.txt").write_text("202599\nSmiling Young\n" + "\n".join(rows) + "\n")
    clf_file = tmp_path / "clf.safetensors"
    argv = ["directions", str(bundled_model_path()), "--data", str(ds), "--labels", str(tmp_path / "labels.txt")]
    argv += ["--save-classifier", str(clf_file), "--epochs", "1", "--n", "100", "--measure", "0"]
    assert main([*argv, "--out", str(tmp_path / "d.json")]) == 2
    # one epoch on 90 smooth random images learns nothing: nothing is offered, the classifier is kept
    assert "error: no attribute passed the checks" in capsys.readouterr().err
    clf = load_classifier(clf_file)
    assert clf.attributes == ["Smiling", "Young"] and clf.report["_"]["epochs"] == 1
    assert clf.report["_"]["train_faces"] + clf.report["_"]["held_out_faces"] == 90
    assert not (tmp_path / "d.json").exists()
