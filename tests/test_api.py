"""The Python API users meet first: `from fakefacegen import load_generator` and the bundled model.

The bundled-model tests skip until src/fakefacegen/assets/celeba64.safetensors exists.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fakefacegen.generate import bundled_model_path

SRC = Path(__file__).resolve().parents[1] / "src"
BUNDLED = bundled_model_path()
needs_bundled = pytest.mark.skipif(
    not BUNDLED.is_file(), reason=f"the bundled model is not installed yet ({BUNDLED} missing)"
)
HAVE_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


@pytest.mark.slow
def test_top_level_api_is_lazy():
    """`import fakefacegen` stays light; the API is importable from the package itself."""
    code = (
        "import sys, fakefacegen\n"
        "assert 'torch' not in sys.modules, 'import fakefacegen imported torch'\n"
        "from fakefacegen import load_generator, bundled_model_path, noise, slerp, export_onnx\n"
        "import fakefacegen.generate as g, fakefacegen.interpolate as i\n"
        "assert load_generator is g.load_generator and slerp is i.slerp\n"
        "assert 'load_generator' in dir(fakefacegen)\n"
        "try:\n    fakefacegen.no_such_thing\nexcept AttributeError as e:\n    assert 'no_such_thing' in str(e)\n"
        "else:\n    raise SystemExit('no AttributeError')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr.strip().splitlines()[-1:]


@pytest.fixture(scope="module")
def G():
    from fakefacegen import load_generator

    return load_generator()


@pytest.mark.slow
@needs_bundled
def test_bundled_sample_is_deterministic_per_seed(G):
    imgs = G.sample(16, seed=0)
    assert imgs.shape == (16, 64, 64, 3) and imgs.dtype == np.uint8
    np.testing.assert_array_equal(G.sample(16, seed=0), imgs)
    np.testing.assert_array_equal(G.sample(4, seed=0), imgs[:4])  # image i depends only on (seed, i)
    other = G.sample(16, seed=1)
    assert np.abs(other.astype(int) - imgs).mean() > 10
    # 16 different faces, not one face 16 times
    flat = imgs.reshape(16, -1).astype(int)
    dists = [np.abs(flat[i] - flat[j]).mean() for i in range(16) for j in range(i + 1, 16)]
    assert min(dists) > 5


@pytest.mark.slow
@needs_bundled
def test_bundled_samples_look_like_aligned_faces(G):
    x = G.sample(256, seed=3).astype(np.float64)
    # neighbouring pixels correlate in photos (>0.95 on CelebA 64px; ~0 for an untrained generator)
    assert np.corrcoef(x[:, :, :-1].ravel(), x[:, :, 1:].ravel())[0, 1] > 0.8
    # the average aligned face is left-right symmetric (0.98 on CelebA 64px; ~0.15 untrained)
    m = x.mean(0)
    assert np.corrcoef(m.ravel(), m[:, ::-1].ravel())[0, 1] > 0.85
    assert x.std() > 20  # not a blank or washed-out image


@pytest.mark.slow
@needs_bundled
def test_bundled_as_pil_and_metadata(G):
    ims = G.sample(3, seed=5, as_pil=True)
    assert len(ims) == 3 and all(im.size == (64, 64) and im.mode == "RGB" for im in ims)
    np.testing.assert_array_equal(np.asarray(ims[1]), G.sample(3, seed=5)[1])
    assert G.resolution == 64 and Path(G.source) == BUNDLED


@pytest.mark.slow
@needs_bundled
def test_bundled_truncation_and_walk(G):
    from fakefacegen.interpolate import interpolate

    full = G.sample(256, seed=0).astype(np.float64).var(axis=0).mean()
    trunc = G.sample(256, seed=0, truncation=0.5).astype(np.float64).var(axis=0).mean()
    assert trunc < full
    walk = interpolate(G, [1, 2], 8, truncation=0.7)
    np.testing.assert_array_equal(walk[0], G.sample(1, 1, truncation=0.7)[0])
    np.testing.assert_array_equal(walk[-1], G.sample(1, 2, truncation=0.7)[0])


@pytest.mark.slow
@needs_bundled
@pytest.mark.skipif(not HAVE_ONNX, reason="onnx/onnxruntime not installed (pip install fakefacegen[export])")
def test_bundled_onnx_export_parity(G, tmp_path):
    from fakefacegen.export import export_onnx

    info = export_onnx(G, tmp_path / "generator.onnx")
    assert info["check"]["max_abs_diff"] < 1e-4 and info["resolution"] == 64


@pytest.mark.slow
@needs_bundled
def test_bundled_cli_defaults(tmp_path, capsys):
    from fakefacegen import cli

    assert cli.main(["generate", "--n", "4", "--seed", "2", "--out", str(tmp_path / "faces")]) == 0
    assert len(list((tmp_path / "faces").glob("seed2-*.png"))) == 4
    if "fakefacegen.commands.interpolate" in cli.COMMANDS:
        assert cli.main(["interpolate", "--seeds", "1,2", "--frames", "4", "--out", str(tmp_path / "walk")]) == 0
        assert (tmp_path / "walk" / "walk.gif").is_file()
