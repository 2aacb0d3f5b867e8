"""Reliability of real training processes: kill -9 at random moments, Ctrl-C/SIGTERM, two
processes on one run directory.

Python + torch take several seconds to start on this machine, so the killed processes are forked
from a "zygote": a helper process that imports torch and fakefacegen once (running no torch op)
and then forks a child per command that runs exactly ``fakefacegen.cli.main(argv)``, i.e. what
``fakefacegen train ...`` runs. The children are ordinary processes: they get SIGKILL/SIGINT/
SIGTERM from this test and nothing of theirs survives a kill. The uninterrupted reference run is
a plain ``python -m fakefacegen train`` subprocess, so the comparison also covers a fresh start.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import debug_train_argv, make_dataset_dir
from fakefacegen.atomic import SLOW_WRITE_ENV, TMP_RE
from fakefacegen.checkpoint import list_checkpoints, load_checkpoint, load_generator_file

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or not sys.platform.startswith("linux"), reason="needs fork() and Linux process semantics"
)

REPO = Path(__file__).resolve().parents[1]

ZYGOTE = r"""
import json, os, sys
import torch  # noqa: F401  imported before any fork; no torch op has run in this process
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: F401
from fakefacegen import cli, train  # noqa: F401

out = sys.stdout
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "spawn":
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                os.environ.update(req.get("env", {}))
                code = cli.main(req["argv"])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        reply = {"pid": pid}
    elif req["op"] == "wait":
        _, st = os.waitpid(req["pid"], 0)
        reply = {"code": os.waitstatus_to_exitcode(st)}
    out.write(json.dumps(reply) + "\n")
    out.flush()
"""


class Zygote:
    """Forks training processes quickly (see the module docstring)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        self.children: set[int] = set()

    def _ask(self, req: dict, timeout: float = 120.0) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            pid = req.get("pid")
            if pid in self.children:
                os.kill(pid, signal.SIGKILL)
            raise TimeoutError(f"zygote gave no answer to {req} in {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("zygote died")
        return json.loads(line)

    def spawn(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
        pid = self._ask({"op": "spawn", "argv": [str(a) for a in argv], "log": str(log), "env": env or {}})["pid"]
        self.children.add(pid)
        return pid

    def wait(self, pid: int, timeout: float = 120.0) -> int:
        code = self._ask({"op": "wait", "pid": pid}, timeout)["code"]
        self.children.discard(pid)
        return code

    def close(self) -> None:
        for pid in list(self.children):  # only our own children, by pid
            try:
                os.kill(pid, signal.SIGKILL)
                self.wait(pid, 10)
            except (OSError, TimeoutError, RuntimeError):
                pass
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    return make_dataset_dir(tmp_path_factory.mktemp("rel") / "ds32", n=64, size=32)


def _train_args(ds: Path, outdir: Path, steps: int, *extra: str) -> list[str]:
    return [
        *debug_train_argv(ds, outdir, f"train.steps={steps}", "train.threads=1", "train.sample_every=100000"),
        "--name",
        "r",
        *extra,
    ]


def _exited(pid: int) -> bool:
    """The child has ended (a zombie until the zygote reaps it); read from /proc, so polling costs
    the child no CPU time on this busy 2-core machine."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _wait_for(cond, timeout: float = 180.0, what: str = "condition", every: float = 0.02):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _ckpt_steps(run: Path) -> list[int]:
    return [int(p.name[5:13]) for p in list_checkpoints(run)]


def _temps(run: Path, pid: int | None = None) -> list[Path]:
    d = run / "checkpoints"
    if not d.is_dir():
        return []
    return [p for p in d.iterdir() if (m := TMP_RE.match(p.name)) and (pid is None or int(m.group(1)) == pid)]


def _assert_same(a, b, where: str = "") -> None:
    """Bitwise equality of nested checkpoint content."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


COMPARED = ("G", "D", "G_ema", "opt_G", "opt_D", "step", "images_seen", "config", "rollbacks", "scaler")


@pytest.mark.slow
def test_kill_minus_9_many_times_loses_nothing(zygote, ds, tmp_path):
    steps, slow_write = 40, "0.12"
    # The uninterrupted reference: a fresh `python -m fakefacegen` process, running meanwhile.
    ref_out = tmp_path / "ref"
    ref = subprocess.Popen(
        [sys.executable, "-m", "fakefacegen", *_train_args(ds, ref_out, steps, "--set", "train.ckpt_every=1")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    rng = random.Random(20240607)
    # mid-write: killed while a checkpoint's temp file exists (written, not yet renamed);
    # random: a random delay after the life has made progress (lands anywhere in a step);
    # startup: a random delay after the start (while loading, resuming, building models).
    rest = ["mid-write"] * 5 + ["random"] * 4 + ["startup"] * 2
    rng.shuffle(rest)
    modes = ["random"] + rest  # the first life must at least create its run directory and config
    out = tmp_path / "killed"
    run = out / "00001-r"
    env = {SLOW_WRITE_ENV: slow_write}
    kills, mid_write, torn_temps, whole_temps, checked_loads = 0, 0, 0, 0, 0
    resumed_from: list[tuple[int, int]] = []
    for life, mode in enumerate(modes):
        before = _ckpt_steps(run) if life else []
        argv = (
            _train_args(ds, out, steps, "--set", "train.ckpt_every=1")
            if life == 0
            else ["train", "--resume", str(run), "--quiet"]
        )
        log = tmp_path / f"life{life}.log"
        pid = zygote.spawn(argv, log, env)
        if mode == "startup":
            time.sleep(rng.uniform(0.02, 0.5))
        elif mode == "mid-write":
            nth = rng.randint(1, 3)
            seen: set[str] = set()

            def nth_temp() -> bool:
                seen.update(p.name for p in _temps(run, pid))
                return len(seen) >= nth or _exited(pid)

            _wait_for(nth_temp, what=f"temp file #{nth} of life {life}")
            # at once: inside torch.save (a torn temp file); or a little later: after the temp file
            # is complete but before its rename (the test hook holds that window open)
            time.sleep(rng.choice([0.0, 0.05]))
        else:
            _wait_for(
                lambda: (_ckpt_steps(run)[-1:] or [0])[0] > (before[-1:] or [0])[0] or _exited(pid),
                what=f"progress of life {life}",
            )
            time.sleep(rng.uniform(0.0, 0.3))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        code = zygote.wait(pid)
        if code != -signal.SIGKILL:  # finished on its own before the kill
            assert code == 0, log.read_text()
            break
        kills += 1
        left = _temps(run, pid)
        if mode == "mid-write" and left:
            mid_write += 1
        for t in left:  # a temp file may be torn; it is never mistaken for a checkpoint
            try:
                load_checkpoint(t)
                whole_temps += 1
            except Exception:
                torn_temps += 1
        # After every kill: every checkpoint is complete, readable and holds the step in its name.
        got = _ckpt_steps(run)
        assert got == list(range(1, len(got) + 1)), f"after kill {kills} ({mode}): {got}"
        for p in list_checkpoints(run):
            assert load_checkpoint(p)["step"] == int(p.name[5:13])
            checked_loads += 1
        assert json.loads((run / "run.json").read_text())["status"] == "running"  # never torn, never "complete"
        text = log.read_text()
        m = re.search(r"Resuming .* from (ckpt-(\d{8})\.pt|the start)", text)
        if life and m:  # resumed from the newest checkpoint that existed when it started
            assert (int(m.group(2)) if m.group(2) else 0) == (before[-1] if before else 0), text
            resumed_from.append((life, int(m.group(2) or 0)))
    assert kills >= 10, f"only {kills} kills landed; the run finished too early"
    assert mid_write >= 3, f"only {mid_write} kills landed inside a checkpoint write"
    last = _ckpt_steps(run)[-1]
    assert 0 < last < steps, "the kills should leave work for the final resume"

    # Finish the run without interruption.
    log = tmp_path / "final.log"
    code = zygote.wait(zygote.spawn(["train", "--resume", str(run), "--quiet"], log, env))
    text = log.read_text()
    assert code == 0, text
    assert f"Resuming {run} from ckpt-{last:08d}.pt" in text
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    assert _ckpt_steps(run) == list(range(1, steps + 1))
    assert _temps(run) == [], "temp files of killed writers must be cleaned up"

    ref_log, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, ref_log
    ref_run = ref_out / "00001-r"
    # Every checkpoint of the killed run equals the uninterrupted run's at that step, bit for bit.
    for step in range(1, steps + 1):
        a = load_checkpoint(ref_run / "checkpoints" / f"ckpt-{step:08d}.pt")
        b = load_checkpoint(run / "checkpoints" / f"ckpt-{step:08d}.pt")
        for k in COMPARED:
            _assert_same(a.get(k), b.get(k), f"step {step} {k}")
    ga, ma, _ = load_generator_file(ref_run / "generator.safetensors")
    gb, mb, _ = load_generator_file(run / "generator.safetensors")
    _assert_same(ga, gb, "generator.safetensors")
    assert ma == mb
    # The log: every step exactly once (the raw file, not read_log's view), the same records as the
    # uninterrupted run's but for the wall-clock fields; the lines cut on resume are what was there twice.
    raw = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    per_step = {s: sum(1 for r in raw if r["step"] == s) for s in {r["step"] for r in raw}}
    assert [r["kind"] for r in raw] == ["train"] * steps and per_step == dict.fromkeys(range(1, steps + 1), 1)
    ref_raw = [json.loads(x) for x in (ref_run / "log.jsonl").read_text().splitlines()]
    untimed = [
        [{k: v for k, v in r.items() if k not in ("img_per_s", "elapsed_s")} for r in rs] for rs in (raw, ref_raw)
    ]
    assert untimed[0] == untimed[1], "the resumed run's log differs from the uninterrupted run's"
    cut = sum(
        int(m.group(1))
        for p in tmp_path.glob("*.log")
        for m in re.finditer(r"note: .*log\.jsonl: (\d+) line\(s\) after step", p.read_text())
    )
    assert cut >= 1, "some kill should land between a step's log line and its checkpoint"
    print(
        f"\nkill -9: {kills} kills ({mid_write} inside a checkpoint write; temp files left: {torn_temps} torn, "
        f"{whole_temps} complete but not renamed), "
        f"{checked_loads} checkpoint loads after kills, resumed from {resumed_from}; final weights bitwise equal; "
        f"log: {len(raw)} records for {steps} steps, max {max(per_step.values())} per step "
        f"({cut} line(s) of steps logged after their life's last checkpoint cut on resume; without the cut: "
        f"{len(raw) + cut} records), equal to the uninterrupted run's but for timing"
    )


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_write_a_checkpoint_and_say_how_to_resume(zygote, ds, tmp_path, sig):
    out = tmp_path / "runs"
    run = out / "00001-r"
    log = tmp_path / "a.log"
    pid = zygote.spawn(_train_args(ds, out, 100000, "--set", "train.ckpt_every=1000"), log)

    def trained_a_few_steps() -> bool:
        try:
            return len((run / "log.jsonl").read_text().splitlines()) >= 3 or _exited(pid)
        except FileNotFoundError:
            return False

    _wait_for(trained_a_few_steps, what="three training steps")
    os.kill(pid, sig)
    code = zygote.wait(pid, 60)
    text = log.read_text()
    assert code == 128 + sig, text
    assert f"{signal.Signals(sig).name} received" in text
    assert f"Resume with: fakefacegen train --resume {run}" in text
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "interrupted"
    stopped = status["step"]
    # the only checkpoint is the one written on the signal (ckpt_every is 1000)
    assert _ckpt_steps(run) == [stopped] and 3 <= stopped < 1000
    assert load_checkpoint(run / "checkpoints" / f"ckpt-{stopped:08d}.pt")["step"] == stopped
    assert _temps(run) == []
    # and it resumes from exactly there
    log2 = tmp_path / "b.log"
    code = zygote.wait(zygote.spawn(["train", "--resume", str(run), "--steps", str(stopped + 2), "--quiet"], log2))
    assert code == 0, log2.read_text()
    assert f"from ckpt-{stopped:08d}.pt" in log2.read_text()
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    assert _ckpt_steps(run)[-1] == stopped + 2


@pytest.mark.slow
def test_second_process_on_the_same_run_directory_is_refused(zygote, ds, tmp_path):
    out = tmp_path / "runs"
    run = out / "00001-r"
    pid_a = zygote.spawn(
        _train_args(ds, out, 100000, "--set", "train.ckpt_every=1"), tmp_path / "a.log", {SLOW_WRITE_ENV: "0.1"}
    )
    _wait_for(lambda: _ckpt_steps(run) or _exited(pid_a), what="A's first checkpoint")
    status_before = json.loads((run / "run.json").read_text())
    # B: --resume the directory A is training in
    code_b = zygote.wait(zygote.spawn(["train", "--resume", str(run), "--quiet"], tmp_path / "b.log"), 60)
    err = (tmp_path / "b.log").read_text().strip().splitlines()
    assert code_b == 2, err
    assert err[-1].startswith("error:") and "in use by another training process" in err[-1]
    assert f"(pid {pid_a})" in err[-1] and str(run) in err[-1]
    # C: a new run in the same --outdir gets its own directory and does not disturb A
    code_c = zygote.wait(zygote.spawn(_train_args(ds, out, 2), tmp_path / "c.log"), 60)
    assert code_c == 0 and (out / "00002-r" / "generator.safetensors").is_file()
    assert not _exited(pid_a), "A must still be running"
    n_before_stop = _ckpt_steps(run)[-1]
    assert n_before_stop >= status_before["step"]
    os.kill(pid_a, signal.SIGTERM)
    assert zygote.wait(pid_a, 60) == 128 + signal.SIGTERM
    # A's run is intact: every checkpoint loads, and it resumes and finishes
    for p in list_checkpoints(run):
        load_checkpoint(p)
    stopped = json.loads((run / "run.json").read_text())["step"]
    code = zygote.wait(
        zygote.spawn(["train", "--resume", str(run), "--steps", str(stopped + 1), "--quiet"], tmp_path / "d.log"), 60
    )
    assert code == 0 and json.loads((run / "run.json").read_text())["status"] == "complete"
