"""The audit on real generator files: a small style-family generator trained to reproduce a handful of
training faces is found to copy them, and the same network trained on faces the training set does not
hold is not. Both go through the whole path a user takes: a saved generator file, ``load_generator``,
``audit_to_dir`` and its summary.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fakefacegen.audit import audit_to_dir
from fakefacegen.checkpoint import save_generator
from fakefacegen.config import ModelConfig
from fakefacegen.dataset_format import load_images
from fakefacegen.stylegan import StyleGenerator
from synthetic_faces import make_dataset_dir

pytestmark = pytest.mark.slow


def train_memoriser(targets: np.ndarray, path: Path, *, steps: int = 150, seed: int = 0) -> Path:
    """A 32 px style generator trained so that every latent's face is its nearest target image
    (the min over targets of the squared error): the degenerate solution a GAN that memorises
    reaches. Saved as a generator file like the trainer's export."""
    torch.manual_seed(seed)
    mc = ModelConfig(arch="style", resolution=32, width=8, z_dim=32, max_width=32)
    g = StyleGenerator(mc)
    t = torch.from_numpy(np.array(targets)).permute(0, 3, 1, 2).float() / 127.5 - 1
    opt = torch.optim.Adam(g.parameters(), lr=1e-2, betas=(0.0, 0.99))
    for _ in range(steps):
        d = ((g(torch.randn(16, mc.z_dim))[:, None] - t[None]) ** 2).mean((2, 3, 4))
        loss = d.min(1).values.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    g.compute_w_avg(n=1000)
    save_generator(g.state_dict(), dataclasses.asdict(mc), path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("memorise")
    return {
        "train": make_dataset_dir(root / "train", n=300, size=32, seed=10),
        "unseen": make_dataset_dir(root / "unseen", n=50, size=32, seed=11),
        "root": root,
    }


def _pixel(summary_dir: Path) -> dict:
    return json.loads((summary_dir / "summary.json").read_text())["spaces"]["pixel"]


def test_generator_trained_on_training_faces_is_found_copying(data):
    memorised = [3, 77, 150, 222]
    train = load_images(data["train"])
    model = train_memoriser(train[memorised], data["root"] / "copier.safetensors")
    out = data["root"] / "audit-copier"
    audit_to_dir(str(model), data["train"], out, n=200, spaces="pixel", cache=False)
    sp = _pixel(out)
    assert sp["copy_rate"] >= 0.95, sp["copy_rate"]
    assert sp["copy_rate_ci95"][0] > 0.05  # far above the 1% that new faces would give
    assert {p["train_row"] for p in sp["closest_pairs"]} <= set(memorised)
    assert sp["generated_to_train"]["p50"] < 0.5 * sp["threshold"]


def test_same_generator_trained_on_unseen_faces_copies_nothing(data):
    unseen = load_images(data["unseen"])[:4]
    model = train_memoriser(unseen, data["root"] / "newfaces.safetensors")
    out = data["root"] / "audit-new"
    audit_to_dir(str(model), data["train"], out, n=200, spaces="pixel", cache=False)
    sp = _pixel(out)
    # The four faces it reproduces are real faces the training set does not hold: as far from it as
    # the leave-one-out calibration's faces are, so none falls below its 1st percentile.
    assert sp["copy_rate"] == 0.0, sp["copy_rate"]
    assert sp["generated_to_train"]["min"] > sp["threshold"]
