"""Shared fixtures: tiny synthetic datasets, the debug config, and where ../shared lives."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from synthetic_faces import make_dataset_dir  # noqa: F401  (tests import it from conftest)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CELEBA = SHARED / "data" / "celeba" / "img_align_celeba"


@pytest.fixture(autouse=True)
def _feature_threads_ignore_load(monkeypatch):
    """Feature extraction picks its thread count per batch from the machine's load (see
    ``auto_threads``); a different count changes oneDNN's reduction order and the features in the
    7th digit. Tests compare repeated extractions bitwise, so here they see an idle machine and use
    a stable count. Tests of ``auto_threads`` itself patch ``runnable_elsewhere`` again."""
    from fakefacegen.metrics import features

    monkeypatch.setattr(features, "runnable_elsewhere", lambda *a, **k: 0)


@pytest.fixture
def dataset32(tmp_path: Path) -> Path:
    return make_dataset_dir(tmp_path / "ds32", n=64, size=32)


@pytest.fixture
def debug_cfg(dataset32: Path):
    from fakefacegen.config import make_config

    return make_config("debug", data=str(dataset32))


def needs_shared() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not CELEBA.is_dir(), reason=f"real CelebA faces not found at {CELEBA} (../shared absent)")


def debug_train_argv(ds: Path, outdir: Path, *sets: str) -> list[str]:
    """``fakefacegen train`` arguments: the debug preset on ``ds``, quiet, into ``outdir``; each of ``sets``
    is one ``--set SECTION.FIELD=VALUE``."""
    return [
        "train",
        "--data",
        str(ds),
        "--preset",
        "debug",
        "--quiet",
        "--outdir",
        str(outdir),
        *(arg for s in sets for arg in ("--set", s)),
    ]


def make_tiny_generator(path: Path, seed: int = 0) -> Path:
    """An untrained 32px generator file: PyTorch's default init (outputs vary far more than under the
    N(0, 0.02) DCGAN init), BatchNorm statistics measured on its own outputs."""
    from fakefacegen.checkpoint import save_generator
    from fakefacegen.config import ModelConfig
    from fakefacegen.models import DCGANGenerator, recalibrate_batchnorm

    torch.manual_seed(seed)
    mc = ModelConfig(resolution=32, width=8, z_dim=16)
    g = DCGANGenerator(mc)
    recalibrate_batchnorm(g, batches=2, batch_size=64)
    save_generator(g.state_dict(), dataclasses.asdict(mc), path)
    return path


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    """A tiny generator file per test module (modules may define their own ``G``)."""
    return make_tiny_generator(tmp_path_factory.mktemp("tinyG") / "g.safetensors")


@pytest.fixture(scope="module")
def G(tiny_path: Path):
    from fakefacegen.generate import load_generator

    return load_generator(tiny_path)


def make_tiny_style_generator(path: Path, seed: int = 9) -> Path:
    """An untrained 32px style-family generator file (width 4, z_dim 16), its w_avg left at zero."""
    from fakefacegen.checkpoint import save_generator
    from fakefacegen.config import ModelConfig
    from fakefacegen.stylegan import StyleGenerator

    torch.manual_seed(seed)
    mc = ModelConfig(resolution=32, width=4, max_width=32, z_dim=16, arch="style")
    save_generator(StyleGenerator(mc).state_dict(), dataclasses.asdict(mc), path)
    return path


@pytest.fixture(scope="module")
def style_G(tmp_path_factory):
    """A tiny style-family generator, loaded (modules may define their own ``style_G``)."""
    from fakefacegen.generate import load_generator

    return load_generator(make_tiny_style_generator(tmp_path_factory.mktemp("styleG") / "g.safetensors"))
