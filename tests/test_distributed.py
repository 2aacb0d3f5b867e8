"""Multi-process training as users start it (torchrun, gloo on CPU) and the helpers in fakefacegen.distributed.

The slow tests launch ``python -m torch.distributed.run --nproc_per_node=2 ... -m fakefacegen train`` on
the debug preset with FAKEFACEGEN_DEBUG_DUMP_DIR set, so every process saves its weights after every
step (``distributed.debug_dump``, called by the trainer), and check:

* both processes hold bit-identical G, D and EMA weights after every step;
* with ``train.sync_bn=true`` the 2-process run matches a 1-process run of the same global batch
  within 1e-5 per weight after 4 steps (measured about 1e-7: only the order of floating-point sums differs);
* a 2-process run resumed from its step-2 checkpoint repeats the uninterrupted run bit for bit;
* only rank 0 writes: one run directory, each log line once, rank 0's weights in the checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import make_dataset_dir
from fakefacegen import distributed as dist
from fakefacegen.config import make_config

STEPS = 4
# Everything the slow runs share: tiny, one thread per process, grids only at the start and the end.
BASE = [
    "--preset",
    "debug",
    "--steps",
    str(STEPS),
    "--quiet",
    "--set",
    "train.threads=1",
    "--set",
    "train.ckpt_every=2",
    "--set",
    "train.keep_checkpoints=0",
    "--set",
    "train.sample_every=1000",
]
# The default BN (per process) and Adam, with every training feature that touches the batch on:
# EMA, lazy R1 (autograd.grad with create_graph under DDP), DiffAugment.
DEFAULT_RUN = [
    "--set",
    "train.ema=0.9",
    "--set",
    "train.r1_gamma=1",
    "--set",
    "train.r1_every=2",
    "--set",
    "train.augment=color,translation,cutout",
]
# For the 1-process comparison: SyncBatchNorm, and SGD rather than Adam, because Adam's first steps
# are about lr * sign(gradient): a gradient within rounding error of zero can flip sign with the
# order of a sum and move that weight by 2 * lr in one run and not the other. SGD keeps rounding
# differences at rounding size, so the tolerance can be tight. fp32 pinned: on CPUs with native bf16
# the auto path trains in bf16, whose rounding (~4e-3 relative) is far above this tolerance.
SYNC_RUN = [
    "--set",
    "train.precision=fp32",
    "--set",
    "train.sync_bn=true",
    "--set",
    "train.augment=color,translation,cutout",
    "--set",
    "g_opt.name=sgd",
    "--set",
    "d_opt.name=sgd",
    "--set",
    "g_opt.lr=0.02",
    "--set",
    "d_opt.lr=0.02",
]
SYNC_TOL = 1e-5

HOOK_HINT = (
    "no per-step weight dumps were written: train.py must call dist.debug_dump(self, self.step) "
    "right after `self.step += 1`"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(dump: Path | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", dist.DUMP_ENV)
    }
    env.update(OMP_NUM_THREADS="1", FAKEFACEGEN_DEBUG="1", PYTHONUNBUFFERED="1")
    if dump is not None:
        env[dist.DUMP_ENV] = str(dump)
    return env


def torchrun(
    args: list[str],
    *,
    nproc: int = 2,
    dump: Path | None = None,
    rdzv: str = "static",
    extra_env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=N -m fakefacegen train ARGS`` as a user would type it."""
    port = _free_port()
    launch = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if rdzv == "c10d":  # the multi-node form (with --nnodes=1 here)
        launch += ["--nnodes=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}"]
    else:
        launch += [f"--master_port={port}"]
    env = _env(dump)
    env.update(extra_env or {})
    r = subprocess.run(
        launch + ["-m", "fakefacegen", "train", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert r.returncode == 0, f"torchrun failed ({r.returncode}):\n{r.stderr[-4000:]}"
    return r


def load_dumps(folder: Path) -> dict[tuple[int, int], dict]:
    """{(rank, step): {"G": state, "D": state, "G_ema": state or None}} from debug_dump files."""
    out = {}
    for f in sorted(folder.glob("rank*-step*.pt")):
        d = torch.load(f, weights_only=True)
        out[(d["rank"], d["step"])] = d
    assert out, HOOK_HINT
    return out


def is_param(key: str) -> bool:
    return not any(b in key for b in ("running_mean", "running_var", "num_batches_tracked"))


def max_abs_diff(a: dict, b: dict, *, params_only: bool = True, nets=("G", "D")) -> float:
    worst = 0.0
    for net in nets:
        for k, v in a[net].items():
            if params_only and not is_param(k):
                continue
            worst = max(worst, (v.double() - b[net][k].double()).abs().max().item())
    return worst


def assert_equal_states(a: dict, b: dict, what: str, *, params_only: bool) -> None:
    for net in ("G", "D", "G_ema"):
        if a.get(net) is None:
            continue
        for k, v in a[net].items():
            if params_only and not is_param(k):
                continue
            assert torch.equal(v, b[net][k]), (
                f"{what}: {net}.{k} differs (max {(v.double() - b[net][k].double()).abs().max():.3g})"
            )


def only_run_dir(outdir: Path) -> Path:
    runs = [p for p in outdir.iterdir() if p.is_dir()]
    assert len(runs) == 1, f"expected one run directory in {outdir}, found {[p.name for p in runs]}"
    return runs[0]


# ------------------------------------------------------------------------------------------------
# Launches shared by the slow tests (each costs a torchrun start: ~5-30 s on a busy 2-core machine)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset_dir(tmp_path_factory.mktemp("ddp") / "ds32", n=64, size=32)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, data):
    """A 2-process run with the default per-process BatchNorm, uninterrupted."""
    root = tmp_path_factory.mktemp("ddp_default")
    t0 = time.perf_counter()
    r = torchrun(["--data", str(data), "--outdir", str(root / "runs"), *BASE, *DEFAULT_RUN], dump=root / "dump")
    return {
        "root": root,
        "run": only_run_dir(root / "runs"),
        "dumps": load_dumps(root / "dump"),
        "proc": r,
        "seconds": time.perf_counter() - t0,
    }


@pytest.mark.slow
def test_two_processes_hold_identical_weights_after_every_step(default_run):
    dumps = default_run["dumps"]
    assert sorted(dumps) == [(r, s) for r in (0, 1) for s in range(1, STEPS + 1)], HOOK_HINT
    for s in range(1, STEPS + 1):
        a, b = dumps[(0, s)], dumps[(1, s)]
        assert a["world"] == b["world"] == 2
        assert_equal_states(a, b, f"step {s}, rank 0 vs rank 1", params_only=True)
    # The weights moved (the comparison above is not between two untouched inits)...
    assert max_abs_diff(dumps[(0, 1)], dumps[(0, STEPS)]) > 1e-4
    # ...and BatchNorm is per process: D's running statistics come from each process's own rows.
    last_a, last_b = dumps[(0, STEPS)], dumps[(1, STEPS)]
    assert max_abs_diff(last_a, last_b, params_only=False, nets=("D",)) > 0


@pytest.mark.slow
def test_only_rank_zero_writes(default_run):
    run = default_run["run"]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == list(range(1, STEPS + 1))  # each line once
    assert all(r["images_seen"] == 8 * r["step"] for r in log)  # the global batch of 8, not 4 per process
    assert sorted(p.name for p in (run / "checkpoints").glob("ckpt-*.pt")) == ["ckpt-00000002.pt", "ckpt-00000004.pt"]
    assert sorted(p.name for p in (run / "samples").glob("fakes-*.png")) == ["fakes-00000000.png", "fakes-00000004.png"]
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    assert (run / "generator.safetensors").is_file()
    assert default_run["proc"].stderr.count(f"run {run} |") == 1  # the start-up line, from rank 0 only
    # The checkpoint holds rank 0's weights and buffers, and says how many processes wrote it
    # (G_ema's BN statistics were re-estimated for the step-4 grid after the dump: weights only there).
    ck = torch.load(run / "checkpoints" / "ckpt-00000004.pt", weights_only=True)
    assert ck["world_size"] == 2
    rank0 = default_run["dumps"][(0, STEPS)]
    assert_equal_states({"G": ck["G"], "D": ck["D"]}, rank0, "checkpoint vs rank 0", params_only=False)
    assert_equal_states({"G_ema": ck["G_ema"]}, rank0, "checkpoint vs rank 0", params_only=True)


@pytest.mark.slow
def test_resume_with_two_processes_repeats_the_uninterrupted_run(default_run, tmp_path):
    # The run as it was when stopped after its step-2 checkpoint.
    src = default_run["run"]
    run = tmp_path / src.name
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("ckpt-00000004.pt", "generator.safetensors", ".lock"))
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text("".join(line + "\n" for line in lines if json.loads(line)["step"] <= 2))

    torchrun(["--resume", str(run), "--steps", str(STEPS), "--quiet"], dump=tmp_path / "dump")
    resumed, full = load_dumps(tmp_path / "dump"), default_run["dumps"]
    assert sorted(resumed) == [(r, s) for r in (0, 1) for s in (3, 4)]
    for (rank, s), state in resumed.items():
        # Every process loaded the same (rank 0's) checkpoint: weights bit-identical to the uninterrupted
        # run on both ranks; buffers on rank 0 (rank 1's per-process BN statistics were never saved).
        assert_equal_states(
            state, full[(rank, s)], f"resumed vs uninterrupted, rank {rank} step {s}", params_only=rank != 0
        )
    a = torch.load(run / "checkpoints" / "ckpt-00000004.pt", weights_only=True)
    b = torch.load(src / "checkpoints" / "ckpt-00000004.pt", weights_only=True)
    for key in ("G", "D", "G_ema"):
        for k in b[key]:
            assert torch.equal(a[key][k], b[key][k]), f"final checkpoint {key}.{k}"
    for key in ("opt_G", "opt_D"):
        for i, st in b[key]["state"].items():
            for name, v in st.items():
                assert torch.equal(torch.as_tensor(a[key]["state"][i][name]), torch.as_tensor(v)), f"{key} {i} {name}"
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == list(range(1, STEPS + 1))


# The style family has no BatchNorm; its minibatch-stddev groups of 4 consecutive rows fit the
# per-process share of 4, and the lazy R1 and R2 penalties run under DDP at steps 2 and 4.
STYLE_RUN = [
    "--set",
    "model.arch=style",
    "--set",
    "train.r1_gamma=1",
    "--set",
    "train.r2_gamma=1",
    "--set",
    "train.r1_every=2",
]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["dcgan", "style"])
def test_sync_bn_two_processes_match_one_process(data, tmp_path, monkeypatch, capsys, family):
    # 2 processes, started the multi-node way (c10d rendezvous), SyncBatchNorm (for the DCGAN).
    run_args = SYNC_RUN + (STYLE_RUN if family == "style" else [])
    torchrun(
        ["--data", str(data), "--outdir", str(tmp_path / "runs2"), *BASE, *run_args],
        dump=tmp_path / "dump2",
        rdzv="c10d",
    )
    two = load_dumps(tmp_path / "dump2")

    # 1 process, in this process, same config and global batch.
    from fakefacegen.train import Trainer

    args = BASE + run_args
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"] + [f"train.steps={STEPS}"]
    cfg = make_config("debug", overrides, data=str(data))
    monkeypatch.setenv(dist.DUMP_ENV, str(tmp_path / "dump1"))
    threads = torch.get_num_threads()
    try:
        Trainer(cfg, outdir=tmp_path / "runs1", progress=False).run()
    finally:
        torch.set_num_threads(threads)
    one = load_dumps(tmp_path / "dump1")

    worst = []
    for s in range(1, STEPS + 1):
        # SyncBatchNorm: buffers too are identical on both ranks (statistics of the global batch).
        assert_equal_states(two[(0, s)], two[(1, s)], f"step {s}, rank 0 vs rank 1", params_only=False)
        worst.append(max_abs_diff(one[(0, s)], two[(0, s)], params_only=False))
    moved = max_abs_diff(one[(0, 1)], one[(0, STEPS)])
    with capsys.disabled():
        print(
            f"\n{family}: 2 vs 1 process (sync_bn, SGD): max |dw| per step {[f'{w:.2g}' for w in worst]}; "
            f"weights moved {moved:.3g} over the run"
        )
    assert moved > 100 * SYNC_TOL  # a real comparison: training changes weights far more than the tolerance
    assert max(worst) < SYNC_TOL, f"2-process run differs from 1 process by {max(worst):.3g} (tolerance {SYNC_TOL})"


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2,
    reason="needs CUDA with at least 2 GPUs (NCCL runs one process per GPU)",
)
def test_nccl_two_gpus(data, tmp_path):
    torchrun(
        [
            "--data",
            str(data),
            "--outdir",
            str(tmp_path / "runs"),
            *BASE,
            "--set",
            "train.sync_bn=true",
            "--set",
            "train.ema=0.9",
        ],
        dump=tmp_path / "dump",
    )
    dumps = load_dumps(tmp_path / "dump")
    for s in range(1, STEPS + 1):
        assert_equal_states(dumps[(0, s)], dumps[(1, s)], f"step {s}, rank 0 vs rank 1", params_only=True)
    assert (only_run_dir(tmp_path / "runs") / "generator.safetensors").is_file()


# ------------------------------------------------------------------------------------------------
# Fast: no process group needed


@pytest.mark.slow
def test_global_batch_must_split_evenly(debug_cfg, tmp_path, monkeypatch):
    from fakefacegen.train import Trainer

    monkeypatch.setattr(dist, "setup", lambda: (0, 2, 0))  # what rank 0 of 2 would see
    debug_cfg.train.batch_size = 7
    with pytest.raises(ValueError, match=r"train.batch_size 7 is not divisible by the number of processes \(2\)"):
        Trainer(debug_cfg, outdir=tmp_path, progress=False)
    debug_cfg.train.batch_size = 8
    threads = torch.get_num_threads()
    try:
        tr = Trainer(debug_cfg, outdir=tmp_path, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert (tr.world, tr.local_batch) == (2, 4)
    if tr.lock:
        tr.lock.release()


def test_step_batch_sampler_shards_the_global_batch():
    from fakefacegen.data import StepBatchSampler

    n, world, local = 50, 2, 4  # 6 global batches per epoch, 2 images dropped
    one = StepBatchSampler(n, local * world, seed=3)
    ranks = [StepBatchSampler(n, local, seed=3, rank=r, world_size=world) for r in range(world)]
    assert one.steps_per_epoch == ranks[0].steps_per_epoch == 6
    epochs = []
    for epoch in range(2):
        seen = []
        for step in range(epoch * 6, epoch * 6 + 6):
            parts = [s.indices(step) for s in ranks]
            assert all(len(p) == local for p in parts)
            assert sum(parts, []) == one.indices(step)  # rank r holds rows r*B:(r+1)*B of the global batch
            seen += sum(parts, [])
        assert len(seen) == len(set(seen)) == 48  # no image twice in an epoch, across processes
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # reshuffled every epoch


@pytest.mark.slow
def test_sync_batchnorm_conversion_keeps_weights_and_acts_as_batchnorm_alone(debug_cfg):
    from fakefacegen.models import build_models

    torch.manual_seed(0)
    g, _ = build_models(debug_cfg.model)
    for m in g.modules():  # non-trivial running statistics to carry over
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    g2 = dist.sync_batchnorm(g, torch.device("cpu"))
    bns = [m for m in g2.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 3 and all(isinstance(m, dist.GlobalBatchNorm2d) for m in bns)
    after = g2.state_dict()
    assert list(after) == list(before)  # checkpoints stay interchangeable
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    # Outside a process group it is exactly BatchNorm2d: train mode (which updates the running
    # statistics in both), then eval mode (which uses them).
    g_ref = build_models(debug_cfg.model)[0]
    g_ref.load_state_dict(before)
    z = torch.randn(6, debug_cfg.model.z_dim)
    torch.testing.assert_close(g2.train()(z), g_ref.train()(z), rtol=0, atol=0)
    torch.testing.assert_close(g2.eval()(z), g_ref.eval()(z), rtol=0, atol=0)
    torch.testing.assert_close(g2.state_dict(), g_ref.state_dict(), rtol=0, atol=0)


def test_debug_dump_only_when_asked(tmp_path, monkeypatch, debug_cfg):
    from types import SimpleNamespace

    from fakefacegen.models import build_models

    g, d = build_models(debug_cfg.model)
    trainer = SimpleNamespace(rank=1, world=2, g=SimpleNamespace(module=g), d=d, g_ema=None)  # g as if DDP-wrapped
    monkeypatch.delenv(dist.DUMP_ENV, raising=False)
    assert dist.debug_dump(trainer, 3) is None
    monkeypatch.setenv(dist.DUMP_ENV, str(tmp_path / "dumps"))
    path = dist.debug_dump(trainer, 3)
    assert path == tmp_path / "dumps" / "rank1-step000003.pt"
    saved = torch.load(path, weights_only=True)
    assert (saved["rank"], saved["step"], saved["world"], saved["G_ema"]) == (1, 3, 2, None)
    for k, v in g.state_dict().items():
        assert torch.equal(saved["G"][k], v)
    assert set(saved["D"]) == set(d.state_dict())


def test_setup_without_torchrun_and_backend_errors(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert dist.setup() == (0, 1, 0)
    assert not dist.is_distributed()
    assert dist.agree([1.5, 2.5, 1.0]) == [1.5, 2.5, 1.0]
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert not dist.launched_by_torchrun()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert dist.launched_by_torchrun()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("FAKEFACEGEN_BACKEND", "mpi")
    with pytest.raises(ValueError, match="FAKEFACEGEN_BACKEND must be nccl or gloo"):
        dist.setup()
    if not torch.cuda.is_available():
        monkeypatch.setenv("FAKEFACEGEN_BACKEND", "nccl")
        with pytest.raises(ValueError, match="FAKEFACEGEN_BACKEND=nccl needs CUDA"):
            dist.setup()
