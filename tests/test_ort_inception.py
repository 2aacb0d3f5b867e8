"""The ONNX Runtime backend of the feature network: export once, checked against PyTorch, cached."""

from __future__ import annotations

import pytest
import torch

from fakefacegen.metrics import ort_inception as oi

pytestmark = pytest.mark.skipif(not oi.available(), reason="onnx/onnxruntime not installed (the export extra)")


class TinyFeatures(torch.nn.Module):
    """A stand-in for the Inception: 299x299 images -> (N, 8) features."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean((2, 3))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKEFACEGEN_CACHE", str(tmp_path / "cache"))


def test_matches_pytorch_and_is_cached():
    model = TinyFeatures().eval()
    net = oi.load_ort_inception(model, threads=1)
    path = oi.onnx_path_for(model)
    assert path.is_file() and path.parent.parent == oi.cache_root()
    x = torch.rand(3, 3, 299, 299) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-5, atol=1e-5)
    before = path.stat().st_mtime_ns
    oi.load_ort_inception(model, threads=1)  # reuses the exported file
    assert path.stat().st_mtime_ns == before


def test_other_weights_get_their_own_file():
    assert oi.onnx_path_for(TinyFeatures(0)) != oi.onnx_path_for(TinyFeatures(1))


def test_a_cached_file_that_does_not_match_is_refused():
    a, b = TinyFeatures(0).eval(), TinyFeatures(1).eval()
    oi.load_ort_inception(b, threads=1)
    oi.onnx_path_for(b).replace(oi.onnx_path_for(a))  # a's cache entry now holds b's network
    with pytest.raises(oi.OrtUnavailableError, match=r"differ from PyTorch's by .* on the probe batch"):
        oi.load_ort_inception(a, threads=1)


def test_a_corrupt_cached_file_is_named():
    model = TinyFeatures().eval()
    path = oi.onnx_path_for(model)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an onnx model")
    with pytest.raises(oi.OrtUnavailableError, match="cannot load it"):
        oi.load_ort_inception(model, threads=1)


@pytest.mark.slow
@pytest.mark.inception
def test_real_inception_fid_and_kid_within_half_a_percent_of_pytorch(monkeypatch):
    """The issue's bar for a faster feature path: FID/KID within 0.5% of the fp32 protocol's on the
    same images. Real faces from ../shared when present, smooth random images otherwise."""
    import numpy as np

    from fakefacegen.metrics import evaluate_images
    from fakefacegen.metrics.inception import InceptionWeightsError, load_inception

    monkeypatch.delenv("FAKEFACEGEN_CACHE")  # the real weights' cache (and its ONNX export) is reused
    try:
        load_inception()
    except InceptionWeightsError as e:
        pytest.skip(f"FID Inception weights unavailable: {e}")
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(48, 6, 6, 3)).astype(np.float32)
    imgs = torch.nn.functional.interpolate(torch.from_numpy(small).permute(0, 3, 1, 2), size=(64, 64), mode="bilinear")
    imgs = imgs.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    res = {
        b: evaluate_images(
            imgs[:24],
            imgs[24:],
            ("fid", "kid"),
            cache=False,
            progress=False,
            backend=b,
            kid_subsets=10,
            kid_subset_size=12,
        )
        for b in ("torch", "onnxruntime")
    }
    assert res["torch"]["protocol"]["backend"] == "torch" and res["onnxruntime"]["protocol"]["backend"] == "onnxruntime"
    assert res["onnxruntime"]["fid"] == pytest.approx(res["torch"]["fid"], rel=5e-3)
    assert res["onnxruntime"]["kid"] == pytest.approx(res["torch"]["kid"], rel=5e-3, abs=1e-6)


def test_backend_choice():
    from fakefacegen.metrics.features import FeatureExtractor

    tiny = TinyFeatures().eval()
    assert FeatureExtractor(tiny).backend == "torch"  # auto: onnxruntime only for the verified Inception
    assert FeatureExtractor(tiny, backend="onnxruntime").backend == "onnxruntime"
    with pytest.raises(ValueError, match="backend 'onnxruntime' runs fp32 on the CPU"):
        FeatureExtractor(tiny, backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="backend must be one of"):
        FeatureExtractor(tiny, backend="tensorrt")
