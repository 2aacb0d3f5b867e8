"""Reliability in-process: divergence, bad checkpoints, bad arguments, full disk, read-only
output, locks. (Killed processes, signals and two processes on one run: test_reliability_kill.py;
bad input images: test_reliability_data.py and test_prepare.py.)"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import debug_train_argv, make_dataset_dir
from fakefacegen.atomic import atomic_write, remove_stale_temps
from fakefacegen.bounds import MAX_STEPS
from fakefacegen.checkpoint import (
    FORMAT,
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_generator_file,
    save_checkpoint,
    save_generator,
)
from fakefacegen.cli import main
from fakefacegen.config import ModelConfig, make_config
from fakefacegen.generate import load_generator
from fakefacegen.models import build_models
from fakefacegen.rundir import RunDirError, RunLock, new_run_dir, read_status, write_status
from fakefacegen.train import DivergenceError, Trainer


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    return make_dataset_dir(tmp_path_factory.mktemp("relds") / "ds32", n=32, size=32)


def _cfg(ds: Path, *overrides: str):
    return make_config("debug", ["train.threads=1", "train.sample_every=100000", *overrides], data=str(ds))


def _steps(run: Path) -> list[int]:
    return [int(p.name[5:13]) for p in list_checkpoints(run)]


def _all_finite(state: dict) -> bool:
    return all(torch.isfinite(t).all() for net in ("G", "D") for t in state[net].values() if t.is_floating_point())


def _one_line_error(capsys, only: bool = False) -> str:
    """The one 'error: ...' line on stderr (with ``only``: and nothing else there)."""
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    if only:
        assert err == lines[0], err
    return lines[0]


# =============================================================================================
# Divergence: NaN/Inf in a loss or a weight


def _poison(trainer: Trainer, opt: str, net: str, at_call: int, every_call_after: bool = False) -> str:
    """After optimiser ``opt``'s ``at_call``-th step, set the first weight of ``net`` to NaN.
    Returns that weight's name."""
    o = getattr(trainer, opt)
    real = o.step
    calls = {"n": 0}
    name, param = next(iter(getattr(trainer, net).named_parameters()))

    def step(*a, **k):
        out = real(*a, **k)
        calls["n"] += 1
        if calls["n"] == at_call or (every_call_after and calls["n"] > at_call):
            with torch.no_grad():
                param[(0,) * param.dim()] = float("nan")
        return out

    o.step = step  # GradScaler.step calls optimizer.step() when it is disabled (CPU fp32)
    return name


@pytest.mark.slow
@pytest.mark.parametrize("opt,net,label", [("opt_d", "d", "discriminator"), ("opt_g", "g", "generator")])
def test_nan_weight_stops_at_once_names_step_and_network(ds, tmp_path, opt, net, label):
    tr = Trainer(_cfg(ds, "train.steps=10", "train.ckpt_every=2"), outdir=tmp_path, progress=False)
    name = _poison(tr, opt, net, at_call=5)
    with pytest.raises(DivergenceError) as e:
        tr.run()
    msg = str(e.value)
    assert "\n" not in msg and "step 5" in msg and f"the {label} weight {name}" in msg, msg
    run = tr.run_dir
    assert _steps(run) == [2, 4], "nothing may be written from the diverged step on"
    for p in list_checkpoints(run):
        assert _all_finite(load_checkpoint(p))
    st = read_status(run)
    assert st["status"] == "failed" and "step 5" in st["message"]


def test_nan_loss_stops_before_its_checkpoint(ds, tmp_path, monkeypatch):
    import fakefacegen.gan_step as T  # the GAN step is where the losses are called

    real = T.d_loss
    calls = {"n": 0}

    def d_loss(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(T, "d_loss", d_loss)
    tr = Trainer(_cfg(ds, "train.steps=6", "train.ckpt_every=1"), outdir=tmp_path, progress=False)
    with pytest.raises(DivergenceError, match=r"step 3: .*discriminator"):
        tr.run()
    assert _steps(tr.run_dir) == [1, 2]  # a checkpoint every step, but none of the NaN step
    assert all(_all_finite(load_checkpoint(p)) for p in list_checkpoints(tr.run_dir))


@pytest.mark.slow
@pytest.mark.parametrize("opt,net,at", [("opt_d", "d", 5), ("opt_g", "g", 4)])
def test_rollback_to_the_last_good_checkpoint(ds, tmp_path, capsys, opt, net, at):
    # at=4 poisons G at a checkpoint step: the rollback must happen there too, not a hard stop
    tr = Trainer(
        _cfg(ds, "train.steps=8", "train.ckpt_every=2", "train.on_nan=rollback"), outdir=tmp_path, progress=False
    )
    _poison(tr, opt, net, at_call=at)
    run = tr.run()
    last_good = 4 if at == 5 else 2
    err = capsys.readouterr().err
    assert f"rolling back to ckpt-{last_good:08d}.pt" in err
    assert read_status(run)["status"] == "complete"
    # the steps trained again after the roll-back are in the log once: the log was cut back to its checkpoint
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9)), steps
    if at - 1 > last_good:  # steps logged after the checkpoint before the NaN step
        assert f"line(s) after step {last_good} removed (written after ckpt-{last_good:08d}.pt" in err
    assert _steps(run) == [2, 4, 6, 8]
    for p in list_checkpoints(run):
        s = load_checkpoint(p)
        assert _all_finite(s)
    assert load_checkpoint(list_checkpoints(run)[-1])["rollbacks"] == 1
    assert load_generator(run).sample(2).shape == (2, 32, 32, 3)


def test_rollback_gives_up_after_three(ds, tmp_path, capsys):
    tr = Trainer(
        _cfg(ds, "train.steps=10", "train.ckpt_every=2", "train.on_nan=rollback"), outdir=tmp_path, progress=False
    )
    _poison(tr, "opt_d", "d", at_call=3, every_call_after=True)  # persistent: every step from the 3rd on
    with pytest.raises(DivergenceError, match="step 3"):
        tr.run()
    assert capsys.readouterr().err.count("rolling back to ckpt-00000002.pt") == 3
    assert _steps(tr.run_dir) == [2] and _all_finite(load_checkpoint(list_checkpoints(tr.run_dir)[0]))
    assert read_status(tr.run_dir)["status"] == "failed"


def test_exploding_learning_rate_cli(ds, tmp_path, capsys):
    # the largest learning rates allowed, with plain SGD on the least-squares loss: diverges in a few steps
    sets = ("d_opt.name=sgd", "g_opt.name=sgd", "d_opt.lr=1", "g_opt.lr=1", "train.loss=lsgan", "train.ckpt_every=100")
    rc = main(debug_train_argv(ds, tmp_path, *sets, "train.steps=6", "train.threads=1"))
    assert rc == 3
    line = _one_line_error(capsys)
    assert re.search(r"training diverged: step \d:", line) and ("generator" in line or "discriminator" in line), line
    run = tmp_path / "00001-debug"
    assert _steps(run) == [] and read_status(run)["status"] == "failed"


# =============================================================================================
# Bad checkpoints: each refused with one line naming the file and the problem, by the API and the CLI


class _Evil:
    """Unpickling this would create a file (code execution)."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.fixture(scope="module")
def good_run(ds, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("goodrun")
    return Trainer(_cfg(ds, "train.steps=2", "train.ckpt_every=1"), outdir=out, progress=False).run()


def _bad_files(good_run: Path, d: Path, marker: Path) -> dict[str, tuple[Path, str]]:
    """{case: (path, expected words in the error)}."""
    ck = good_run / "checkpoints" / "ckpt-00000002.pt"
    data, gen = ck.read_bytes(), (good_run / "generator.safetensors").read_bytes()
    state = torch.load(ck, weights_only=True)
    cases: dict[str, tuple[Path, str]] = {}

    def put(name: str, content: bytes | None, expect: str, obj=None, **save_kw) -> None:
        p = d / name
        if obj is not None:
            torch.save(obj, p, **save_kw)
        else:
            p.write_bytes(content)
        cases[name] = (p, expect)

    put("truncated.pt", data[: len(data) // 2], "truncated or corrupt")
    put("truncated_tail.pt", data[:-64], "truncated or corrupt")
    put("empty.pt", b"", "empty file")
    put("text.pt", b"this is a text file, not weights\n" * 20, "unrecognised content")
    put("random_bytes.pt", np.random.default_rng(0).bytes(4096), "unrecognised content")
    put(
        "other_model.pt",
        None,
        "not a FakeFaceGen checkpoint",
        obj={"conv1.weight": torch.randn(64, 3, 7, 7), "bn1.running_mean": torch.zeros(64), "fc.bias": torch.zeros(10)},
    )
    put(
        "torchvision_like.pt",
        None,
        "not a FakeFaceGen checkpoint",
        obj={"state_dict": {"layer1.0.conv1.weight": torch.randn(8, 8, 3, 3)}, "epoch": 3, "arch": "resnet18"},
    )
    put("future_version.pt", None, "format version 99 is newer", obj={**state, "format_version": 99})
    put("no_G.pt", None, "lacks 'G'", obj={k: v for k, v in state.items() if k != "G"})
    nan_state = {**state, "G": {k: v.clone() for k, v in state["G"].items()}}
    first = next(k for k, v in nan_state["G"].items() if v.is_floating_point())
    nan_state["G"][first][(0,) * nan_state["G"][first].dim()] = float("inf")
    put("nan_weights.pt", None, f"G weight {first} contains NaN/Inf", obj=nan_state)
    # a 64 px generator's weights in a checkpoint that says 32 px
    g64, _ = build_models(ModelConfig(resolution=64, width=8, z_dim=16))
    put(
        "res64_in_32.pt",
        None,
        "model.resolution is 32 in its config, but its tensors are of resolution 64",
        obj={**state, "G": g64.state_dict(), "G_ema": None},
    )
    # code execution attempts: a zip checkpoint, a raw pickle and the legacy torch format
    put("evil_zip.pt", None, "refused to load", obj={**state, "G": _Evil(marker)})
    put("evil_pickle.pt", pickle.dumps({"format": FORMAT, "G": _Evil(marker)}), "refused to load")
    put(
        "evil_legacy.pt",
        None,
        "refused to load",
        obj={"format": FORMAT, "G": _Evil(marker)},
        _use_new_zipfile_serialization=False,
    )
    # generator files
    put("truncated.safetensors", gen[: len(gen) // 2], "truncated or corrupt")
    from safetensors.torch import save as st_save

    put("foreign.safetensors", st_save({"w": torch.zeros(3)}), "not a FakeFaceGen generator file")
    meta_future = st_save(
        {"w": torch.zeros(3)}, metadata={"format": "fakefacegen-generator", "format_version": "99", "model": "{}"}
    )
    put("future.safetensors", meta_future, "generator format version 99 is newer")
    put("checkpoint_named.safetensors", data, "a PyTorch checkpoint, not a safetensors")
    put("generator_named.pt", gen, "a safetensors file")
    return cases


@pytest.mark.slow
def test_bad_checkpoints_are_refused_with_one_line(good_run, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    cases = _bad_files(good_run, tmp_path, marker)
    assert len(cases) == 19
    for name, (path, expect) in cases.items():
        with pytest.raises(CheckpointError) as e:
            load_generator(path)
        msg = str(e.value)
        assert "\n" not in msg and str(path) in msg and expect in msg, (name, msg)
        out = tmp_path / f"out-{name}"
        assert main(["generate", str(path), "--n", "2", "--out", str(out)]) == 2, name
        line = _one_line_error(capsys, only=True)
        assert str(path) in line and expect in line, (name, line)
        assert not out.exists(), f"{name}: nothing may be written from a bad checkpoint"
    assert not marker.exists(), "a malicious pickle was executed"
    # the good ones still load
    assert load_generator(good_run).sample(1).shape == (1, 32, 32, 3)


def test_truncation_at_any_point_is_detected(good_run, tmp_path):
    data = (good_run / "checkpoints" / "ckpt-00000001.pt").read_bytes()
    p = tmp_path / "t.pt"
    cuts = sorted({int(f * len(data)) for f in np.linspace(0, 1, 25)[:-1]} | {1, 4, len(data) - 1})
    for cut in cuts:
        p.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(p)
        assert "\n" not in str(e.value), cut


def test_resume_with_other_resolution_data_or_weights(good_run, ds, tmp_path, capsys):
    # (a) the run's dataset was replaced by 64 px images
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    data64 = make_dataset_dir(tmp_path / "ds64", n=16, size=64)
    for p in list_checkpoints(run):
        s = torch.load(p, weights_only=True)
        s["config"]["data"] = str(data64)
        save_checkpoint({k: v for k, v in s.items() if k not in ("format", "format_version")}, p)
    assert main(["train", "--resume", str(run), "--steps", "3", "--quiet"]) == 2
    line = _one_line_error(capsys)
    assert "64 px but model.resolution is 32" in line and str(data64) in line
    # (b) checkpoints whose weights are of a 64 px model: refused before any network is built, naming
    # the file and the field
    run2 = tmp_path / "run2"
    shutil.copytree(good_run, run2)
    g64, d64 = build_models(ModelConfig(resolution=64, width=8, z_dim=16))
    for ck in list_checkpoints(run2):
        s = torch.load(ck, weights_only=True)
        s["G"], s["D"], s["G_ema"] = g64.state_dict(), d64.state_dict(), None
        save_checkpoint({k: v for k, v in s.items() if k not in ("format", "format_version")}, ck)
    with pytest.raises(CheckpointError) as e:
        Trainer(resume=run2, progress=False)
    assert "none of its 2 checkpoint(s) can be used; refusing to start over" in str(e.value)
    assert f"{ck}: model.resolution is 32 in its config, but its tensors are of resolution 64" in str(e.value)
    # (c) a D of another size in a checkpoint whose G fits: refused when loaded into the model
    run3 = tmp_path / "run3"
    shutil.copytree(good_run, run3)
    for ck in list_checkpoints(run3):
        s = torch.load(ck, weights_only=True)
        s["D"] = d64.state_dict()
        save_checkpoint({k: v for k, v in s.items() if k not in ("format", "format_version")}, ck)
    with pytest.raises(CheckpointError) as e:
        Trainer(resume=run3, progress=False)
    assert "checkpoint does not fit this model" in str(e.value) and str(ck) in str(e.value)


def test_resume_skips_a_damaged_newest_checkpoint_but_never_starts_over(good_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    marker = tmp_path / "PWNED"
    newest = list_checkpoints(run)[-1]
    torch.save({"format": FORMAT, "G": _Evil(marker)}, newest)
    tr = Trainer(resume=run, progress=False)
    assert tr.step == 1 and not marker.exists()
    if tr.lock:
        tr.lock.release()
    assert f"warning: skipping {newest}" in capsys.readouterr().err
    # all checkpoints unusable: refuse rather than silently train from step 0 over the run
    first = list_checkpoints(run)[0]
    first.write_bytes(first.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="refusing to start over"):
        Trainer(resume=run, progress=False)


def test_killed_between_last_checkpoint_and_export(good_run, tmp_path):
    # A kill after the final checkpoint but before generator.safetensors: the resume must export it.
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    (run / "generator.safetensors").unlink()
    write_status(run, "running", step=2)
    Trainer(resume=run, progress=False).run()
    state, _, meta = load_generator_file(run / "generator.safetensors")
    assert meta["step"] == 2 and read_status(run)["status"] == "complete"
    ref, _, _ = load_generator_file(good_run / "generator.safetensors")
    assert all(torch.equal(state[k], ref[k]) for k in ref)


# =============================================================================================
# Bad arguments


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["train", "--preset", "debug", "--batch-size", "0"], "--batch-size must be an integer in 1..4096 (got 0)"),
        (["train", "--preset", "debug", "--batch-size", "-8"], "--batch-size must be an integer in 1..4096 (got -8)"),
        (["train", "--preset", "debug", "--steps", "0"], f"--steps must be an integer in 1..{MAX_STEPS} (got 0)"),
        (["train", "--preset", "debug", "--steps", "-3"], f"--steps must be an integer in 1..{MAX_STEPS} (got -3)"),
        (["train", "--preset", "debug", "--set", "model.resolution=48"], "model.resolution must be a power of two"),
        (["train", "--preset", "debug", "--set", "model.resolution=0"], "model.resolution must be a power of two"),
        (["train", "--preset", "debug", "--set", "model.resolution=512"], "model.resolution must be a power of two"),
        (["train", "--preset", "debug", "--set", "model.width=0"], "model.width must be an integer in 1..1024 (got 0)"),
        (
            ["train", "--preset", "debug", "--set", "model.z_dim=-1"],
            "model.z_dim must be an integer in 1..1024 (got -1)",
        ),
        (
            ["train", "--preset", "debug", "--set", "train.ckpt_every=0"],
            f"train.ckpt_every must be an integer in 1..{MAX_STEPS} (got 0)",
        ),
        (["train", "--preset", "debug", "--set", "d_opt.lr=0"], "d_opt.lr must be a number in (0, 1] (got 0.0)"),
        (["train", "--resume", "NORUN"], "not a run directory (no config.json)"),
        (["prepare", "SRC", "--size", "0", "--out", "OUT"], "--size must be a power of two in 32..256 (got 0)"),
        (["prepare", "SRC", "--size", "48", "--out", "OUT"], "--size must be a power of two in 32..256 (got 48)"),
        (["prepare", "SRC", "--size", "-64", "--out", "OUT"], "--size must be a power of two in 32..256 (got -64)"),
        (
            ["prepare", "SRC", "--size", "32", "--workers", "0", "--out", "OUT"],
            "--workers must be an integer in 1..256 (got 0)",
        ),
        (["generate", "RUN", "--n", "0", "--out", "OUT"], "--n must be an integer in 1..100000 (got 0)"),
        (["generate", "RUN", "--n", "-5", "--out", "OUT"], "--n must be an integer in 1..100000 (got -5)"),
        (
            ["generate", "RUN", "--batch-size", "0", "--out", "OUT"],
            "--batch-size must be an integer in 1..1024 (got 0)",
        ),
        (["generate", "RUN", "--truncation", "0", "--out", "OUT"], "--truncation must be a number in [0.3, 1] (got 0)"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, expect, good_run, ds, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 40), (1, 2, 3)).save(src / "a.png")
    sub = {"SRC": str(src), "OUT": str(tmp_path / "out"), "RUN": str(good_run), "NORUN": str(tmp_path / "norun")}
    argv = [sub.get(a, a) for a in argv]
    if argv[0] == "train" and "--resume" not in argv:
        argv += ["--data", str(ds), "--outdir", str(tmp_path / "runs"), "--quiet"]
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert expect in line, line
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_batch_not_divisible_by_processes(ds, tmp_path, monkeypatch):
    import fakefacegen.train as T

    monkeypatch.setattr(T.dist, "setup", lambda: (0, 3, 0))  # as if torchrun started 3 processes
    with pytest.raises(ValueError) as e:
        Trainer(_cfg(ds, "train.batch_size=8"), outdir=tmp_path / "runs", progress=False)
    assert "train.batch_size 8 is not divisible by the number of processes (3)" in str(e.value)
    assert not (tmp_path / "runs").exists()


def test_prepare_into_an_existing_directory(tmp_path, capsys):
    from PIL import Image

    (tmp_path / "src").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "src" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main(["prepare", str(tmp_path / "src"), "--out", str(out), "--size", "32", "--quiet"]) == 2
    assert "already exists" in _one_line_error(capsys)
    # --overwrite does not delete a directory that is not a dataset either
    assert main(["prepare", str(tmp_path / "src"), "--out", str(out), "--size", "32", "--quiet", "--overwrite"]) == 2
    assert "not a fakefacegen dataset" in _one_line_error(capsys)
    assert (out / "mine.txt").read_text() == "keep me"


def _mount_tmpfs(path: Path, opts: str) -> str | None:
    """Mount a tmpfs at ``path`` (needs root/CAP_SYS_ADMIN); returns why not, or None on success."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    except OSError as e:
        return str(e)
    return None if r.returncode == 0 else (r.stderr.strip() or f"mount exited {r.returncode}")


@contextmanager
def _tmpfs(path: Path, opts: str):
    """A mounted tmpfs; skips the test where mounting is not permitted."""
    why = _mount_tmpfs(path, opts)
    if why:
        pytest.skip(f"cannot mount a tmpfs here ({why}); test_disk_full_simulated covers this")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.parametrize("where", ["under a regular file", "read-only file system"])
def test_unwritable_output_locations(where, good_run, ds, tmp_path, capsys):
    """Output locations that cannot be written even by root (tests run as root here)."""
    from PIL import Image

    (tmp_path / "src").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "src" / "a.png")
    if where == "under a regular file":
        (tmp_path / "a_file").write_text("x")
        base, cm = tmp_path / "a_file" / "sub", None
    else:
        cm = _tmpfs(tmp_path / "ro", "ro,size=64k")
        base = cm.__enter__() / "sub"
    try:
        for argv in (
            ["train", "--data", str(ds), "--preset", "debug", "--quiet", "--outdir", str(base / "runs")],
            ["prepare", str(tmp_path / "src"), "--size", "32", "--quiet", "--out", str(base / "ds")],
            ["generate", str(good_run), "--n", "2", "--out", str(base / "faces")],
        ):
            assert main(argv) == 2, argv[0]
            line = _one_line_error(capsys)
            assert str(base) in line, line
        assert not base.exists()
    finally:
        if cm is not None:
            cm.__exit__(None, None, None)


@pytest.mark.slow
def test_unwritable_as_an_unprivileged_user(tmp_path):
    """Root ignores permission bits, so run prepare as 'nobody': an unreadable input is skipped and
    listed; an output directory without write permission is a one-line error."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    from PIL import Image

    base = Path(__import__("tempfile").mkdtemp(prefix="ffg-perm-", dir="/tmp"))
    try:
        base.chmod(0o755)
        src, out_ok, locked_parent = base / "src", base / "writable", base / "locked"
        src.mkdir()
        out_ok.mkdir()
        locked_parent.mkdir()
        for d in (src, base):
            d.chmod(0o755)
        out_ok.chmod(0o777)
        Image.new("RGB", (40, 40), (9, 9, 9)).save(src / "a.png")
        Image.new("RGB", (40, 40), (9, 9, 9)).save(src / "secret.png")
        (src / "secret.png").chmod(0)
        env = {**os.environ, "HOME": str(base)}

        def as_nobody(*args: str) -> subprocess.CompletedProcess:
            cmd = [sys.executable, "-m", "fakefacegen", *args]
            kw: dict = {}
            if shutil.which("setpriv"):
                cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
            else:
                kw = {"user": 65534, "group": 65534, "extra_groups": []}
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=base, timeout=120, **kw)
            except PermissionError as e:
                pytest.skip(f"user 'nobody' cannot run this Python ({e})")
            if r.returncode in (126, 127) or "Fatal Python error" in r.stderr:
                pytest.skip(f"user 'nobody' cannot run this Python: {r.stderr.strip()[:200]}")
            return r

        r = as_nobody("prepare", str(src), "--size", "32", "--workers", "1", "--quiet", "--out", str(out_ok / "ds"))
        assert r.returncode == 0, r.stderr
        m = json.loads((out_ok / "ds" / "manifest.json").read_text())
        assert m["count"] == 1 and m["skipped"] == [{"path": "secret.png", "reason": "permission denied"}]
        r = as_nobody("prepare", str(src), "--size", "32", "--quiet", "--out", str(locked_parent / "ds"))
        err = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(err) == 1 and err[0].startswith("error:"), r.stderr
        assert "Permission denied" in err[0] and str(locked_parent) in err[0]
        assert list(locked_parent.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


# =============================================================================================
# Full disk


def _check_after_failed_write(run: Path, good_steps: list[int]) -> None:
    assert _steps(run) == good_steps
    for p in list_checkpoints(run):
        assert load_checkpoint(p)["step"] == int(p.name[5:13])
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], leftovers
    st = read_status(run)
    assert st.get("status") == "failed" and "No space left on device" in st.get("message", ""), st


def test_disk_full_simulated(ds, tmp_path, monkeypatch, capsys):
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            f.write(b"\0" * 4096)  # part of the file made it to disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    rc = main(debug_train_argv(ds, tmp_path, "train.ckpt_every=1", "train.threads=1", "train.steps=5"))
    assert rc == 2
    run = tmp_path / "00001-debug"
    line = _one_line_error(capsys)
    assert "No space left on device" in line and str(run / "checkpoints" / "ckpt-00000003.pt") in line, line
    _check_after_failed_write(run, [1, 2])


@pytest.mark.slow
def test_disk_full_real_tmpfs(ds, tmp_path, capsys):
    """A 1.3 MB file system: two debug checkpoints fit, the third does not."""
    with _tmpfs(tmp_path / "small", "size=1300k") as small:
        args = [
            "--set",
            "train.ckpt_every=1",
            "--set",
            "train.threads=1",
            "--set",
            "train.steps=6",
            "--set",
            "train.sample_every=100000",
        ]
        rc = main(["train", "--data", str(ds), "--preset", "debug", "--quiet", "--outdir", str(small), *args])
        assert rc == 2
        run = small / "00001-debug"
        line = _one_line_error(capsys)
        assert "No space left on device" in line and "ckpt-" in line, line
        good = _steps(run)
        assert len(good) >= 1
        _check_after_failed_write(run, list(range(1, len(good) + 1)))
        # with space again, the run resumes from the last good checkpoint and ends exactly where
        # an uninterrupted run ends
        subprocess.run(["mount", "-o", "remount,size=16m", str(small)], check=True)
        assert main(["train", "--resume", str(run), "--quiet"]) == 0
        assert read_status(run)["status"] == "complete"
        ref = tmp_path / "ref"
        assert main(["train", "--data", str(ds), "--preset", "debug", "--quiet", "--outdir", str(ref), *args]) == 0
        a = load_checkpoint(list_checkpoints(ref / "00001-debug")[-1])
        b = load_checkpoint(list_checkpoints(run)[-1])
        for net in ("G", "D"):
            assert all(torch.equal(a[net][k], b[net][k]) for k in a[net])


# =============================================================================================
# Atomic writes, stale temp files, locks


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write(p, lambda f: f.write(b"old"))

    def boom(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as e:
        atomic_write(p, boom)
    assert e.value.errno == errno.ENOSPC and str(p) in str(e.value)
    assert p.read_bytes() == b"old" and [x.name for x in tmp_path.iterdir()] == ["f.bin"]


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".ckpt-00000003.pt.{dead.pid}.tmp"
    alive = tmp_path / f".ckpt-00000004.pt.{os.getppid()}.tmp"  # a live process: left alone
    other = tmp_path / ".run.json.tmp"
    for p in (stale, alive, other):
        p.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and alive.exists() and other.exists()


def test_run_lock_is_exclusive_and_names_the_holder(tmp_path):
    a = RunLock(tmp_path).acquire()
    try:
        with pytest.raises(RunDirError) as e:
            RunLock(tmp_path).acquire()
        assert f"(pid {os.getpid()})" in str(e.value) and str(tmp_path) in str(e.value)
    finally:
        a.release()
    with RunLock(tmp_path):  # free again once released
        pass


def test_trainer_refuses_a_locked_run_directory(good_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    before = (run / "run.json").read_bytes()
    with RunLock(run):
        with pytest.raises(RunDirError, match="in use by another training process"):
            Trainer(resume=run, progress=False)
    assert (run / "run.json").read_bytes() == before


def test_new_run_dirs_never_collide(tmp_path):
    made: list[Path] = []
    lock = threading.Lock()

    def make():
        d = new_run_dir(tmp_path, "x")
        with lock:
            made.append(d)

    threads = [threading.Thread(target=make) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 12 and sorted(p.name for p in made) == [f"{i:05d}-x" for i in range(1, 13)]


def test_save_generator_and_checkpoint_round_trip(tmp_path):
    g, _ = build_models(ModelConfig(resolution=32, width=8, z_dim=16))
    save_generator(g.state_dict(), {"resolution": 32, "width": 8, "z_dim": 16}, tmp_path / "g.safetensors")
    state, model, _ = load_generator_file(tmp_path / "g.safetensors")
    assert model["resolution"] == 32 and all(torch.equal(state[k], v.float()) for k, v in g.state_dict().items())
    assert [p.name for p in tmp_path.iterdir()] == ["g.safetensors"]
    buf = io.BytesIO()
    torch.save({"x": 1}, buf)
    assert buf.getvalue()[:2] == b"PK"  # sniffing relies on torch.save writing a zip


# =============================================================================================
# Code in a pickle: refused in every format the loaders accept, with one line that says nothing ran


class _System:
    """Unpickling this would run a shell command (os.system) that creates ``target``."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _pickle_formats(d: Path, payload) -> dict[str, Path]:
    """One file per format a loader accepts: torch's zip, torch's legacy format, plain pickles of
    protocols 0 to 5; each named .pt."""
    files: dict[str, Path] = {}
    torch.save(payload, d / "zip.pt")
    torch.save(payload, d / "legacy.pt", _use_new_zipfile_serialization=False)
    files["zip"], files["legacy"] = d / "zip.pt", d / "legacy.pt"
    for proto in range(6):
        p = d / f"pickle{proto}.pt"
        p.write_bytes(pickle.dumps(payload, protocol=proto))
        files[f"pickle{proto}"] = p
    return files


@pytest.mark.slow
def test_code_in_a_pickle_is_refused_in_every_format(good_run, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    state = torch.load(good_run / "checkpoints" / "ckpt-00000002.pt", weights_only=True)
    files = _pickle_formats(tmp_path, {**state, "G": _System(marker)})
    assert len(files) == 8
    for fmt, path in files.items():
        expect = (
            f"{path}: refused to load: it contains code or objects that are not plain tensors and numbers "
            f"(unpickling it would call posix.system); nothing in it was run"
        )
        for load in (load_checkpoint, load_generator):
            with pytest.raises(CheckpointError) as e:
                load(path)
            assert str(e.value) == expect, (fmt, str(e.value))
            assert "weights_only" not in str(e.value)
        assert main(["generate", str(path), "--n", "1", "--out", str(tmp_path / "o")]) == 2
        assert _one_line_error(capsys, only=True) == f"error: {expect}", fmt
        # named as a generator export: never unpickled either
        st = path.with_suffix(".safetensors")
        shutil.copyfile(path, st)
        with pytest.raises(CheckpointError, match="not a safetensors generator file") as e:
            load_generator(st)
        assert str(st) in str(e.value)
        # as the newest checkpoint of a run: generate refuses the run; train --resume skips it with
        # the same reason and resumes from the one before
        run = tmp_path / f"run-{fmt}"
        shutil.copytree(good_run, run)
        newest = run / "checkpoints" / "ckpt-00000002.pt"
        shutil.copyfile(path, newest)
        with pytest.raises(CheckpointError) as e:
            load_generator(run)
        assert str(e.value) == expect.replace(str(path), str(newest))
        tr = Trainer(resume=run, progress=False)
        assert tr.step == 1
        if tr.lock:
            tr.lock.release()
        err = capsys.readouterr().err
        assert f"warning: skipping {run / 'checkpoints' / 'ckpt-00000002.pt'}: refused to load: " in err
    assert not marker.exists(), "a malicious pickle ran"


# =============================================================================================
# A generator file's model config: checked against the ranges and the file's tensors before a
# network is built


def _crafted_generator(path: Path, model: dict, tensors: dict | None = None) -> Path:
    from safetensors.torch import save

    if tensors is None:
        g, _ = build_models(ModelConfig(resolution=32, width=8, z_dim=16))
        tensors = g.state_dict()
    meta = {"format": "fakefacegen-generator", "format_version": "1", "model": json.dumps(model), "meta": "{}"}
    path.write_bytes(save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta))
    return path


GOOD_MODEL = {"resolution": 32, "width": 8, "z_dim": 16, "arch": "reference"}


@pytest.mark.parametrize(
    "change,expect",
    [
        ({"resolution": 65536}, "the stored model config is invalid: model.resolution"),
        ({"z_dim": 10**9}, "the stored model config is invalid: model.z_dim"),
        ({"width": 10**6}, "the stored model config is invalid: model.width"),
        ({"mapping_layers": 10**6, "arch": "style"}, "the stored model config is invalid: model.mapping_layers"),
        ({"resolution": "64"}, "the stored model config is invalid"),
        ({"heads": 8}, "the stored model config is invalid (ModelConfig.__init__() got an unexpected keyword"),
        ({"z_dim": 17}, "model.z_dim is 17 in its config, but its tensors are of z_dim 16"),
        ({"width": 16}, "model.width is 16 in its config, but its tensors are of width 8"),
        ({"resolution": 64}, "model.resolution is 64 in its config, but its tensors are of resolution 32"),
        ({"arch": "tutorial"}, "model.arch is 'tutorial' in its config, but its tensors are of arch 'reference'"),
        ({"arch": "style"}, "model.arch is 'style' in its config, but its tensors are those of a dcgan generator"),
    ],
)
def test_generator_metadata_is_checked_before_a_network_is_built(tmp_path, monkeypatch, capsys, change, expect):
    import time

    import fakefacegen.generate as gen

    path = _crafted_generator(tmp_path / "g.safetensors", {**GOOD_MODEL, **change})
    monkeypatch.setattr(gen, "build_generator", lambda mc: pytest.fail(f"a network was built for {mc}"))
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError) as e:
        load_generator(path)
    assert time.perf_counter() - t0 < 1.0
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and expect in msg, msg
    assert main(["generate", str(path), "--n", "1", "--out", str(tmp_path / "o")]) == 2
    assert _one_line_error(capsys, only=True) == f"error: {msg}"
    assert not (tmp_path / "o").exists()


def test_generator_tensors_missing_extra_or_misshapen(tmp_path):
    g, _ = build_models(ModelConfig(resolution=32, width=8, z_dim=16))
    sd = g.state_dict()
    cases = {
        "missing": ({k: v for k, v in sd.items() if k != "net.4.running_var"}, "no tensor net.4.running_var"),
        "extra": ({**sd, "net.99.weight": torch.zeros(2)}, "tensor net.99.weight is not part of a generator"),
        "shape": ({**sd, "net.3.weight": torch.zeros(32, 16, 3, 3)}, "tensor net.3.weight is [32, 16, 3, 3], but a"),
    }
    for name, (tensors, expect) in cases.items():
        path = _crafted_generator(tmp_path / f"{name}.safetensors", GOOD_MODEL, tensors)
        with pytest.raises(CheckpointError, match=re.escape(expect)) as e:
            load_generator_file(path)
        assert str(e.value).startswith(f"{path}: ")
    # the same rule for a training checkpoint's G (and the EMA copy): its config names the sizes
    from fakefacegen.checkpoint import check_format

    state = {
        "format": FORMAT,
        "format_version": 1,
        "step": 1,
        "G": sd,
        "config": {"model": {**GOOD_MODEL, "z_dim": 10**9}},
    }
    with pytest.raises(CheckpointError, match=r"x\.pt: the stored model config is invalid: model\.z_dim"):
        check_format(state, "x.pt")
    with pytest.raises(
        CheckpointError, match=r"x\.pt: model\.width is 4 in its config, but its tensors are of width 8"
    ):
        check_format({**state, "config": {"model": {**GOOD_MODEL, "width": 4}}}, "x.pt")
    check_format({**state, "config": {"model": GOOD_MODEL}, "G_ema": sd}, "x.pt")  # a consistent one passes


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(
    arch=st.sampled_from(["reference", "tutorial", "style"]),
    resolution=st.sampled_from([32, 64, 128]),
    width=st.integers(1, 12),
    z_dim=st.integers(1, 24),
    max_width=st.integers(1, 48),
    mapping_layers=st.integers(1, 4),
    noise_inputs=st.booleans(),
)
def test_generator_shapes_are_those_of_the_networks(
    arch, resolution, width, z_dim, max_width, mapping_layers, noise_inputs
):
    """checkpoint.generator_shapes (computed, nothing built) equals the state_dict of the network
    that models.build_generator builds, for both families (the style family with and without noise inputs)."""
    from fakefacegen.checkpoint import generator_shapes
    from fakefacegen.models import build_generator

    mc = ModelConfig(
        resolution=resolution,
        width=width,
        z_dim=z_dim,
        arch=arch,
        max_width=max_width,
        mapping_layers=mapping_layers,
        noise_inputs=noise_inputs and arch == "style",
    )
    mc.validate()
    built = {k: tuple(v.shape) for k, v in build_generator(mc).state_dict().items()}
    assert generator_shapes(mc) == built
