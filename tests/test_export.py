"""ONNX and TorchScript export: parity with PyTorch on the same noise, dynamic batch, reports, errors, CLI."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from fakefacegen import export as ex
from fakefacegen.generate import LoadedGenerator, noise

MODULE = "fakefacegen.commands.export"
HAVE_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(
    not HAVE_ONNX, reason="onnx/onnxruntime not installed (pip install fakefacegen[export])"
)


def torch_images(G: LoadedGenerator, z: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return G.net(z).clamp(-1, 1).numpy()


@pytest.fixture(scope="module", params=["dcgan", "style", "style-noise"])
def G(request, tiny_path, tmp_path_factory):
    """Each test runs on a tiny generator of both families (the style family also with noise inputs,
    their strengths made non-zero so that the maps reach the image)."""
    from fakefacegen.generate import load_generator

    if request.param == "dcgan":
        return load_generator(tiny_path)
    import dataclasses

    from fakefacegen.checkpoint import save_generator
    from fakefacegen.config import ModelConfig
    from fakefacegen.stylegan import StyleGenerator

    torch.manual_seed(0)
    noisy = request.param == "style-noise"
    mc = ModelConfig(resolution=32, width=4, max_width=32, z_dim=16, arch="style", noise_inputs=noisy)
    sd = StyleGenerator(mc).state_dict()
    for k in sd:
        if k.endswith("noise_strength"):
            sd[k] = torch.tensor(0.5)
    path = tmp_path_factory.mktemp("tinyStyle") / "g.safetensors"
    save_generator(sd, dataclasses.asdict(mc), path)
    return load_generator(path)


def run_cli(argv: list[str]) -> int:
    """The console command, in process."""
    from fakefacegen import cli

    assert MODULE in cli.COMMANDS
    return cli.main(argv)


def hide_modules(monkeypatch, *names: str) -> None:
    """Make ``import name`` fail as if the package were not installed."""
    for n in names:
        monkeypatch.setitem(sys.modules, n, None)


@pytest.mark.slow
@needs_onnx
def test_onnx_matches_pytorch_with_dynamic_batch(G, tmp_path):
    import onnx
    import onnxruntime as ort

    path = tmp_path / "g.onnx"
    info = ex.export_onnx(G, path)
    onnx.checker.check_model(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "z" and outp.name == "image"
    assert isinstance(inp.shape[0], str) and inp.shape[1] == 16  # batch axis is symbolic
    diffs = []
    for n in (1, 3, 9):  # none is the traced batch size
        z = noise(n, 16, seed=42)
        got = sess.run(None, {"z": z.numpy()})[0]
        assert got.shape == (n, 3, 32, 32)
        diffs.append(np.abs(got - torch_images(G, z)).max())
    assert max(diffs) < 1e-4
    # the report says what the export measured, and is stored next to the file
    assert 0 <= info["check"]["max_abs_diff"] < 1e-4
    stored = json.loads((tmp_path / "g.onnx.json").read_text())
    assert stored["check"]["max_abs_diff"] == info["check"]["max_abs_diff"]
    assert stored["input"]["shape"] == ["batch", 16] and stored["output"]["shape"] == ["batch", 3, 32, 32]
    assert stored["onnxruntime_version"] == ort.__version__


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_matches_pytorch_with_dynamic_batch(G, tmp_path):
    path = tmp_path / "g.torchscript.pt"
    info = ex.export_torchscript(G, path)
    m = torch.jit.load(str(path))
    for n in (1, 4, 11):
        z = noise(n, 16, seed=7)
        with torch.no_grad():
            got = m(z).numpy()
        assert got.shape == (n, 3, 32, 32)
        assert np.abs(got - torch_images(G, z)).max() < 1e-5
    assert info["check"]["max_abs_diff"] < 1e-5
    assert json.loads((tmp_path / "g.torchscript.json").read_text())["format"] == "torchscript"


@pytest.mark.slow
def test_parity_check_fails_loudly(G, tmp_path, monkeypatch):
    real = ex._reference

    def shifted(G, seed):  # pretend PyTorch disagrees with the exported file
        return [(z, ref + 0.01) for z, ref in real(G, seed)]

    monkeypatch.setattr(ex, "_reference", shifted)
    with pytest.raises(RuntimeError, match=r"g\.torchscript\.pt: TorchScript output differs from PyTorch by 0\.01"):
        ex.export_torchscript(G, tmp_path / "g.torchscript.pt")


@pytest.mark.slow
def test_missing_onnx_names_the_extra(tiny_path, tmp_path, monkeypatch, capsys):
    hide_modules(monkeypatch, "onnxruntime")
    out = tmp_path / "o"
    with pytest.raises(ImportError, match=r"pip install fakefacegen\[export\]"):
        ex.export_model(tiny_path, out, "onnx")
    assert not out.exists()  # nothing half-written
    assert run_cli(["export", str(tiny_path), "--format", "both", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "pip install fakefacegen[export]" in err and "\n" not in err
    # TorchScript needs only torch
    hide_modules(monkeypatch, "onnx")
    assert set(ex.export_model(tiny_path, out, "torchscript")) == {"torchscript"}
    assert (out / ex.TORCHSCRIPT_FILE).is_file()


def test_parse_formats():
    assert ex.parse_formats("both") == ("onnx", "torchscript")
    assert ex.parse_formats("torchscript") == ("torchscript",)
    with pytest.raises(ValueError, match="--format"):
        ex.parse_formats("tflite")


@pytest.mark.slow
@needs_onnx
def test_cli_exports_both(tiny_path, tmp_path, capsys):
    out = tmp_path / "exp"
    assert run_cli(["export", str(tiny_path), "--format", "both", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "max abs difference from PyTorch" in text
    names = {p.name for p in out.iterdir()}
    assert names == {ex.ONNX_FILE, "generator.onnx.json", ex.TORCHSCRIPT_FILE, "generator.torchscript.json"}
    for j in ("generator.onnx.json", "generator.torchscript.json"):
        d = json.loads((out / j).read_text())
        assert f"{d['check']['max_abs_diff']:.3g}" in text


def test_cli_bad_model_is_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.safetensors"
    assert run_cli(["export", str(missing), "--format", "torchscript", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert str(missing) in err and "\n" not in err


@pytest.mark.slow
def test_registered_in_fakefacegen_cli(tiny_path, tmp_path, capsys):
    """Passes once cli.COMMANDS lists this module."""
    from fakefacegen import cli

    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    assert "examples:" in capsys.readouterr().out
    assert cli.main(["export", str(tiny_path), "--format", "torchscript", "--out", str(tmp_path / "c")]) == 0
