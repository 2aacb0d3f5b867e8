import json

import numpy as np
import pytest
import torch
from PIL import Image

from fakefacegen.checkpoint import list_checkpoints, load_checkpoint
from fakefacegen.cli import main
from fakefacegen.config import make_config
from fakefacegen.train import Trainer


def _state_equal(a, b):
    for k in ("G", "D"):
        for name in a[k]:
            assert torch.equal(a[k][name], b[k][name]), f"{k}.{name} differs"


@pytest.mark.slow
def test_training_writes_a_complete_run(debug_cfg, tmp_path):
    run = Trainer(debug_cfg, outdir=tmp_path / "runs", progress=False).run()
    assert run.name == "00001-debug"
    assert json.loads((run / "config.json").read_text())["model"]["resolution"] == 32
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    recs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 9))
    assert all(np.isfinite([r["loss_d"], r["loss_g"]]).all() and 0 <= r["d_real"] <= 1 for r in train)
    assert train[-1]["images_seen"] == 8 * 8
    for png in ("losses.png", "samples/real.png", "samples/fakes-00000000.png", "samples/fakes-00000008.png"):
        with Image.open(run / png) as im:
            im.load()
    ckpts = list_checkpoints(run)
    assert [c.name for c in ckpts] == ["ckpt-00000004.pt", "ckpt-00000008.pt"]
    state = load_checkpoint(ckpts[-1])
    assert state["step"] == 8 and state["config"]["train"]["steps"] == 8
    assert {"G", "D", "opt_G", "opt_D", "images_seen", "fakefacegen_version"} <= set(state)
    # the second run never reuses the first one's directory
    assert Trainer(debug_cfg, outdir=tmp_path / "runs", progress=False).run().name == "00002-debug"


@pytest.mark.slow
def test_training_actually_learns_something(dataset32, tmp_path):
    # D should separate real from fake early on: D(x) > D(G(z)) on average over the first steps.
    cfg = make_config("debug", ["train.steps=12"], data=str(dataset32))
    run = Trainer(cfg, outdir=tmp_path, progress=False).run()
    train = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert np.mean([r["d_real"] - r["d_fake"] for r in train]) > 0


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        [
            "train.ema=0.9",
            "train.augment=color,translation,cutout",
            "train.r1_gamma=0.1",
            "train.r1_every=3",
            "train.loss=hinge",
            "model.spectral_norm=true",
            "model.d_norm=none",
        ],
        ["g_opt.name=sgd", "d_opt.name=sgd", "d_opt.weight_decay=0.01", "train.real_label=0.9", "train.loss=lsgan"],
    ],
)
@pytest.mark.slow
def test_resume_continues_exactly(dataset32, tmp_path, overrides):
    torch.set_num_threads(1)
    cfg = make_config("debug", overrides + ["train.steps=6", "train.ckpt_every=2"], data=str(dataset32))
    full = Trainer(cfg, outdir=tmp_path / "a", progress=False).run()
    part = Trainer(cfg, outdir=tmp_path / "b", progress=False, stop_after=3)
    part_dir = part.run()
    assert load_checkpoint(list_checkpoints(part_dir)[-1])["step"] == 3
    resumed = Trainer(resume=part_dir, progress=False).run()
    a = load_checkpoint(list_checkpoints(full)[-1])
    b = load_checkpoint(list_checkpoints(resumed)[-1])
    assert a["step"] == b["step"] == 6 and a["images_seen"] == b["images_seen"]
    _state_equal(a, b)
    la = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines() if '"train"' in line]
    lb = [json.loads(line) for line in (resumed / "log.jsonl").read_text().splitlines() if '"train"' in line]
    assert [r["loss_d"] for r in la] == [r["loss_d"] for r in lb]
    assert [r["loss_g"] for r in la] == [r["loss_g"] for r in lb]


def test_resolution_mismatch_is_a_clear_error(dataset32, tmp_path):
    cfg = make_config("celeba64", data=str(dataset32))
    with pytest.raises(ValueError, match="32 px but model.resolution is 64"):
        Trainer(cfg, outdir=tmp_path, progress=False)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, capsys):
    # prepare real image files -> train a few steps -> generate -> the PNGs decode
    src = tmp_path / "photos"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        arr = rng.integers(0, 256, (50 + i, 40, 3), dtype=np.uint8)
        Image.fromarray(arr).save(src / f"{i:03d}.jpg", quality=90)
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    assert main(["prepare", str(src), "--size", "32", "--out", str(tmp_path / "ds"), "--quiet"]) == 0
    assert "1 skipped" in capsys.readouterr().out
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "ds"),
                "--preset",
                "debug",
                "--steps",
                "3",
                "--outdir",
                str(tmp_path / "runs"),
                "--quiet",
            ]
        )
        == 0
    )
    run = tmp_path / "runs" / "00001-debug"
    assert main(["generate", str(run), "--n", "5", "--seed", "1", "--out", str(tmp_path / "faces")]) == 0
    files = sorted((tmp_path / "faces").glob("*.png"))
    assert len(files) == 6
    for f in files:
        with Image.open(f) as im:
            assert im.mode == "RGB"
            assert im.size == ((32, 32) if f.name != "grid.png" else im.size)
    # resume of a finished run with more steps continues it
    assert main(["train", "--resume", str(run), "--steps", "4", "--quiet"]) == 0
    assert load_checkpoint(list_checkpoints(run)[-1])["step"] == 4


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--preset", "debug", "--outdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "missing" in err and "\n" not in err
    assert main(["train", "--preset", "debug", "--set", "train.loss=nope"]) == 2
    assert "train.loss" in capsys.readouterr().err


def test_dry_run_prints_config_and_models(capsys):
    assert main(["train", "--preset", "celeba64", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert '"resolution": 64' in out and "Generator:" in out and "ConvTranspose2d" in out


def test_cuda_graphs_on_without_a_gpu_is_a_one_line_usage_error(dataset32, tmp_path, capsys):
    argv = ["train", "--data", str(dataset32), "--preset", "debug", "--outdir", str(tmp_path / "runs"), "--quiet"]
    assert main([*argv, "--device", "cpu", "--set", "train.cuda_graphs=on"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: train.cuda_graphs=on cannot be used here: it needs a CUDA device and this run is on cpu; "
        "use auto or off"
    )
    assert not (tmp_path / "runs").exists()
