"""Crash consistency of what the project writes: after a kill at any point and a resume (or the next
run of the same command), each training step is in the log once, every file is whole (the old
version or the new one), and nothing a killed writer left trips up a later run.

The log (append-only) is cut back to the checkpoint a run resumes from (rundir.cut_log); the other
files are written through atomic.py. The kill -9 test of a real training process, with the log
compared to an uninterrupted run's, is test_reliability_kill.py; killed prepares are in
test_prepare.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_dataset_dir
from fakefacegen.atomic import TMP_RE
from fakefacegen.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from fakefacegen.cli import main
from fakefacegen.config import make_config
from fakefacegen.rundir import cut_log, read_log
from fakefacegen.train import Trainer

REPO = Path(__file__).resolve().parents[1]
TIMING = ("img_per_s", "elapsed_s")  # wall-clock fields: the only ones that differ between two runs


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    return make_dataset_dir(tmp_path_factory.mktemp("cc") / "ds32", n=32, size=32)


def _cfg(ds: Path, *overrides: str):
    return make_config("debug", ["train.threads=1", "train.sample_every=100000", *overrides], data=str(ds))


def _per_step(run: Path, kind: str = "train") -> dict[int, int]:
    """How many records of ``kind`` each step has in the raw log.jsonl (not deduplicated by read_log)."""
    counts: dict[int, int] = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == kind:
            counts[rec["step"]] = counts.get(rec["step"], 0) + 1
    return counts


def _untimed(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_log(run / "log.jsonl")]


# =============================================================================================
# cut_log / read_log

record = st.fixed_dictionaries(
    {"kind": st.sampled_from(["train", "eval", "audit"]), "step": st.integers(0, 12)},
    optional={"loss_d": st.floats(allow_nan=False, allow_infinity=False), "note": st.text(max_size=5)},
)
line = st.one_of(
    record.map(json.dumps),
    st.just('{"kind": "train", "step": 3, "loss'),  # a torn last line of a killed writer
    st.just('{"kind": "note"}'),  # a record without a step: kept
    st.just("[1, 2]"),  # JSON, but not a record
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(lines=st.lists(line, max_size=30), step=st.integers(0, 12))
def test_cut_log_keeps_each_step_once_up_to_the_checkpoint(tmp_path_factory, lines, step):
    path = tmp_path_factory.mktemp("log") / "log.jsonl"
    path.write_text("".join(x + "\n" for x in lines))
    parsed = []
    for x in lines:
        try:
            r = json.loads(x)
        except ValueError:
            continue
        if isinstance(r, dict):
            parsed.append((x, r))
    removed = cut_log(path, step)
    kept = path.read_text().splitlines()
    assert removed == len(lines) - len(kept)
    recs = [json.loads(x) for x in kept]
    assert all(isinstance(r, dict) for r in recs)  # torn and foreign lines are gone
    keys = [(r["kind"], r["step"]) for r in recs if "step" in r]
    assert len(keys) == len(set(keys)) and all(s <= step for _, s in keys)
    # what is kept: the last record of each (kind, step) up to the step, in file order, byte for byte
    last = {}
    for i, (_, r) in enumerate(parsed):
        if "step" in r:
            last[(r["kind"], r["step"])] = i
    expect = [
        x
        for i, (x, r) in enumerate(parsed)
        if "step" not in r or (r["step"] <= step and last[(r["kind"], r["step"])] == i)
    ]
    assert kept == expect
    assert read_log(path) == recs
    assert cut_log(path, step) == 0  # idempotent: a second resume changes nothing
    assert path.read_text().splitlines() == kept


def test_read_log_counts_a_step_logged_twice_once(tmp_path):
    """A log written before resumes cut it (314 records for 300 steps): readers see each step once,
    its last record (the one of the run that went on)."""
    path = tmp_path / "log.jsonl"
    recs = [{"kind": "train", "step": s, "loss_d": 1.0} for s in (1, 2, 3, 2, 3, 4)]
    recs[3]["loss_d"] = recs[4]["loss_d"] = 2.0
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    got = read_log(path)
    assert [(r["step"], r["loss_d"]) for r in got] == [(1, 1.0), (2, 2.0), (3, 2.0), (4, 1.0)]


# =============================================================================================
# A resumed run: the log, best.pt and the log window as at its checkpoint


@pytest.mark.slow
def test_resume_cuts_what_a_killed_run_wrote_after_its_checkpoint(ds, tmp_path, capsys):
    steps = 6
    ref = Trainer(_cfg(ds, f"train.steps={steps}", "train.ckpt_every=2"), outdir=tmp_path / "ref", progress=False).run()

    tr = Trainer(_cfg(ds, f"train.steps={steps}", "train.ckpt_every=2"), outdir=tmp_path / "k", progress=False)
    tr.stop_after = 4
    run = tr.run()
    assert [int(p.name[5:13]) for p in list_checkpoints(run)] == [2, 4]
    # What a process killed just before its checkpoint at step 6 leaves: steps 5 and 6 logged, an
    # evaluation (with the audit's fields) of step 6, best.pt of step 6, and a torn last line.
    log = run / "log.jsonl"
    with open(log, "a") as f:
        for s in (5, 6):
            f.write(json.dumps({"kind": "train", "step": s, "images_seen": 8 * s, "loss_d": 9.0, "loss_g": 9.0}) + "\n")
        f.write(json.dumps({"kind": "eval", "step": 6, "fid": 300.0, "copy_rate": 0.0}) + "\n")
        f.write('{"kind": "train", "step": 7, "los')
    state = load_checkpoint(run / "checkpoints" / "ckpt-00000004.pt")
    save_checkpoint(
        {**{k: v for k, v in state.items() if k not in ("format", "format_version")}, "step": 6},
        run / "checkpoints" / "best.pt",
    )
    capsys.readouterr()

    Trainer(resume=run, progress=False).run()
    err = capsys.readouterr().err
    assert f"note: {log}: 4 line(s) after step 4 removed (written after ckpt-00000004.pt" in err
    assert f"note: {run / 'checkpoints' / 'best.pt'}: of step 6, after step 4; removed" in err
    assert not (run / "checkpoints" / "best.pt").exists()
    assert _per_step(run) == dict.fromkeys(range(1, steps + 1), 1)
    assert _per_step(run, "eval") == {}
    assert _untimed(run) == _untimed(ref)  # the same records as the uninterrupted run, bit for bit


def test_stale_best_checkpoint_becomes_the_best_one_still_kept(ds, tmp_path, capsys):
    tr = Trainer(_cfg(ds, "train.steps=6", "train.ckpt_every=1"), outdir=tmp_path, progress=False)
    tr.best = {"metric": "fid", "value": 123.0, "step": 2}  # as an evaluation at step 2 would have set it
    tr.stop_after = 3
    run = tr.run()
    best = run / "checkpoints" / "best.pt"
    state = load_checkpoint(run / "checkpoints" / "ckpt-00000003.pt")
    save_checkpoint({**{k: v for k, v in state.items() if k not in ("format", "format_version")}, "step": 5}, best)
    capsys.readouterr()
    t2 = Trainer(resume=run, progress=False)
    if t2.lock:
        t2.lock.release()
    assert f"note: {best}: was of step 5, now ckpt-00000002.pt (the best up to step 3)" in capsys.readouterr().err
    assert best.read_bytes() == (run / "checkpoints" / "ckpt-00000002.pt").read_bytes()


@pytest.mark.slow
def test_resume_between_two_log_lines_writes_the_same_means(ds, tmp_path):
    """A checkpoint between two log lines (Ctrl-C, SIGTERM) carries the log window: the resumed
    run's next line averages the same steps as an uninterrupted run's."""
    over = ("train.steps=8", "train.log_every=4", "train.ckpt_every=100")
    ref = Trainer(_cfg(ds, *over), outdir=tmp_path / "ref", progress=False).run()
    tr = Trainer(_cfg(ds, *over), outdir=tmp_path / "k", progress=False)
    tr.stop_after = 3
    run = tr.run()
    assert load_checkpoint(run / "checkpoints" / "ckpt-00000003.pt")["log_window"]["n"] == 3
    Trainer(resume=run, progress=False).run()
    assert [r["step"] for r in _untimed(run)] == [4, 8]
    assert _untimed(run) == _untimed(ref)


# =============================================================================================
# A failed start leaves no run folder


def _run_folders(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


@pytest.mark.slow
def test_failed_start_leaves_no_run_folder(ds, tmp_path, monkeypatch, capsys):
    import errno

    from fakefacegen.config import Config

    out = tmp_path / "runs"
    out.mkdir()
    # a bad data folder
    assert main(["train", "--data", str(tmp_path / "nope"), "--preset", "debug", "--quiet", "--outdir", str(out)]) == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err
    # evaluation asked for, but its Inception weights cannot be loaded (found before the run folder)
    argv = ["train", "--data", str(ds), "--preset", "debug", "--quiet", "--outdir", str(out)]
    code = main([*argv, "--set", "eval.every=1", "--set", f"eval.inception={tmp_path / 'no-weights.pt'}"])
    assert code == 2 and "no-weights.pt" in capsys.readouterr().err

    # the disk fills up while the run folder is being set up
    def full(self, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(Config, "save", full)
    assert main(argv) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert _run_folders(out) == []
    monkeypatch.undo()
    assert main([*argv, "--steps", "1"]) == 0  # and the next run gets the first number
    assert _run_folders(out) == ["00001-debug"]


# =============================================================================================
# Every writer killed at every write: each file whole (old or new), nothing left that trips a rerun

KILLER = r"""
import json, os, shutil, signal, sys
from pathlib import Path
import torch  # noqa: F401  imported before any fork; no torch op has run in this process
from fakefacegen import atomic
from fakefacegen.atomic import TMP_RE

root, cases = Path(sys.argv[1]), json.loads(sys.argv[2])


def write(case, out, version):
    import numpy as np
    if case == "checkpoint":
        from fakefacegen.checkpoint import save_checkpoint
        from fakefacegen.config import ModelConfig, Config
        from fakefacegen.models import build_models
        torch.manual_seed(version)
        g, _ = build_models(ModelConfig(resolution=32, width=4, z_dim=8))
        cfg = Config().to_dict()
        cfg["model"].update(resolution=32, width=4, z_dim=8)
        save_checkpoint({"config": cfg, "step": version, "G": g.state_dict()}, out / "ckpt-00000001.pt")
    elif case == "generator":
        from fakefacegen.checkpoint import save_generator
        from fakefacegen.config import ModelConfig
        from fakefacegen.models import build_models
        import dataclasses
        torch.manual_seed(version)
        mc = ModelConfig(resolution=32, width=4, z_dim=8)
        g, _ = build_models(mc)
        save_generator(g.state_dict(), dataclasses.asdict(mc), out / "generator.safetensors", meta={"step": version})
    elif case == "export":
        from fakefacegen.export import export_model
        export_model(root / f"gen{version}.safetensors", out, "both")
    elif case == "metrics":
        from fakefacegen.metrics.evaluate import write_metrics_json
        write_metrics_json({"fid": float(version), "protocol": {"n": 10}}, out / "eval-a.json")
    elif case == "stats":
        from fakefacegen.metrics.stats_cache import save_features
        save_features({"k": 1}, np.full((4, 3), version, np.float32), root=out, check={"v": version})
    elif case == "audit":
        from fakefacegen.audit.report import write_report
        write_report({"model": f"m{version}", "percentile": 1.0, "calibration": "leave-one-out", "n_generated": 0,
                      "spaces": {}, "_fakes": None, "_images": None, "_reference_images": None}, out)
    elif case == "compare":
        from fakefacegen.compare import compare_runs
        compare_runs([root / "run"], out, title=f"v{version}")
    elif case == "grid":
        from fakefacegen.images import save_grid
        save_grid(np.full((4, 32, 32, 3), version, np.uint8), out / "fakes-00000001.png", nrow=2)
    elif case == "config":
        from fakefacegen.config import Config
        c = Config(); c.train.steps = version; c.save(out / "config.json")


def fork(case, out, version, kill_at=0):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if kill_at:
                seen = [0]
                real = atomic.fsync_path
                def fsync_then_die(path):  # the temp file is written: cut it in half and die before its rename
                    real(path)
                    if TMP_RE.match(Path(path).name):
                        seen[0] += 1
                        if seen[0] == kill_at:
                            os.truncate(path, os.path.getsize(path) // 2)
                            os.kill(os.getpid(), signal.SIGKILL)
                atomic.fsync_path = fsync_then_die
            write(case, out, version)
        except BaseException:
            import traceback; traceback.print_exc(); code = 1
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


result = {}
for case in cases:
    base = root / case
    for v, name in ((1, "old"), (2, "new")):
        (base / name).mkdir(parents=True)
        assert fork(case, base / name, v) == 0, (case, name)
    points = 0
    while True:
        work = base / f"kill{points + 1}"
        shutil.copytree(base / "old", work)
        code = fork(case, work, 2, kill_at=points + 1)
        if code == 0:  # finished before that many writes: every write point has been killed
            shutil.rmtree(work)
            break
        assert code == -signal.SIGKILL, (case, code)
        points += 1
        again = base / f"rerun{points}"
        shutil.copytree(work, again)
        assert fork(case, again, 2) == 0, (case, "rerun")
    result[case] = points
print(json.dumps(result))
"""

CASES = ("checkpoint", "generator", "export", "metrics", "stats", "audit", "compare", "grid", "config")


def _content(p: Path):
    """A file's content to compare: its bytes; for safetensors (whose header's key order varies
    from one write to the next) the metadata and tensors, for TorchScript (whose zip differs) the
    tensors; the bytes when it does not parse."""
    data = p.read_bytes()
    if p.name.endswith(".torchscript.pt"):
        try:
            return {k: v.numpy().tobytes() for k, v in torch.jit.load(str(p)).state_dict().items()}
        except Exception:
            return data
    if p.suffix == ".safetensors":
        from safetensors.torch import load

        try:
            n = int.from_bytes(data[:8], "little")
            meta = json.loads(data[8 : 8 + n]).get("__metadata__")
            return meta, {k: v.numpy().tobytes() for k, v in sorted(load(data).items())}
        except Exception:
            return data
    return re.sub(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", b"<time>", data)  # compare's "created"


def _files(d: Path) -> dict[str, object]:
    return {str(p.relative_to(d)): _content(p) for p in sorted(d.rglob("*")) if p.is_file()}


def _hidden_temp(rel: str) -> bool:
    return bool(TMP_RE.match(Path(rel).name))


@pytest.mark.slow
def test_every_writer_killed_at_every_write(tmp_path, ds):
    from fakefacegen.checkpoint import save_generator

    pytest.importorskip("onnxruntime")
    # inputs: two generator files to export, a run to compare
    for v in (1, 2):
        torch.manual_seed(v)
        from fakefacegen.config import ModelConfig
        from fakefacegen.models import build_models

        mc = ModelConfig(resolution=32, width=4, z_dim=8)
        g, _ = build_models(mc)
        save_generator(g.state_dict(), {"resolution": 32, "width": 4, "z_dim": 8}, tmp_path / f"gen{v}.safetensors")
    run = Trainer(_cfg(ds, "train.steps=2", "train.sample_every=1"), outdir=tmp_path / "runs", progress=False).run()
    shutil.copytree(run, tmp_path / "run")

    r = subprocess.run(
        [sys.executable, "-c", KILLER, str(tmp_path), json.dumps(CASES)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    points = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(points) == set(CASES) and all(n >= 1 for n in points.values()), points
    for case, n in points.items():
        old, new = _files(tmp_path / case / "old"), _files(tmp_path / case / "new")
        assert old.keys() == new.keys() and any(old[k] != new[k] for k in old), f"{case}: versions must differ"
        for i in range(1, n + 1):
            killed = _files(tmp_path / case / f"kill{i}")
            visible = {k: v for k, v in killed.items() if not _hidden_temp(k)}
            # every file is whole: the old version or the new one, never a torn one
            assert visible.keys() == old.keys(), (case, i, sorted(visible))
            assert all(v in (old[k], new[k]) for k, v in visible.items()), (case, i)
            if i == 1:
                assert visible == old, f"{case}: the first write killed, nothing may have changed"
            assert any(_hidden_temp(k) for k in killed), (case, i)  # the killed write's torn temp file
            # the next run of the same writer succeeds, writes the new version and removes the temp file
            rerun = _files(tmp_path / case / f"rerun{i}")
            assert {k: v for k, v in rerun.items() if not _hidden_temp(k)} == new, (case, i)
            if case in ("checkpoint", "generator", "export", "metrics", "stats", "audit", "compare"):
                assert not any(_hidden_temp(k) for k in rerun), (case, i, sorted(rerun))
    print(f"\nkilled writes: {points} ({sum(points.values())} kill points, every file whole after each)")
