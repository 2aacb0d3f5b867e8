"""scripts/bundle_model.py: a run's EMA generator as float16 safetensors with its metrics, from a run
directory, a checkpoint file, or a generator file brought back from elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fakefacegen.checkpoint import load_generator_file
from fakefacegen.generate import load_generator
from fakefacegen.train import Trainer

REPO = Path(__file__).resolve().parents[1]


def bundle(*args: str) -> str:
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bundle_model.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.slow
def test_bundle_from_run_checkpoint_and_generator_file(debug_cfg, tmp_path):
    debug_cfg.train.ema = 0.9
    run = Trainer(debug_cfg, outdir=tmp_path / "runs", progress=False).run()
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps({"fid": 12.5, "kid": 0.004, "kid_std": 0.001, "protocol": {"n_fake": 2000}}))

    a = tmp_path / "a.safetensors"
    assert "images seen" in bundle(run, "--eval", ev, "--out", a)
    state, model, meta = load_generator_file(a)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())  # loaded as fp32
    from safetensors import safe_open

    with safe_open(str(a), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys() if f.get_tensor(k).is_floating_point())
    assert meta["step"] == debug_cfg.train.steps and meta["fid"] == 12.5 and meta["fid_n"] == 2000
    assert meta["ema"] is True and meta["preset"] == "debug" and model["resolution"] == 32

    # The last checkpoint file gives the same weights as its run directory.
    ck = sorted((run / "checkpoints").glob("ckpt-*.pt"))[-1]
    b = tmp_path / "b.safetensors"
    bundle(ck, "--out", b)
    sa, sb = load_generator_file(a)[0], load_generator_file(b)[0]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

    # A generator file keeps its weights and provenance; the metrics and preset name are added.
    c = tmp_path / "c.safetensors"
    bundle(b, "--eval", ev, "--preset", "celeba64-gpu", "--out", c)
    sc, _, mc = load_generator_file(c)
    assert all(torch.equal(sa[k], sc[k]) for k in sa)
    assert mc["step"] == meta["step"] and mc["images_seen"] == meta["images_seen"]
    assert mc["preset"] == "celeba64-gpu" and mc["kid"] == 0.004
    imgs = load_generator(c).sample(4, seed=0)
    assert imgs.shape == (4, 32, 32, 3) and imgs.dtype.name == "uint8"
