"""Run directories: the names of the files in one, a new numbered directory per run, a lock so two
processes never share one, the status file that says whether the run finished, and the training
log (``log.jsonl``: one JSON record per line) with its one reader.

Layout of ``runs/NNNNN-name/`` (:class:`RunDir` gives the paths)::

    config.json              the run's config, written first
    run.json                 status: running | complete | interrupted | failed
    log.jsonl                {"kind": "train" | "eval", "step": ..., ...} per line; each (kind, step) once
    losses.png, metrics.png  plots of the log
    samples/real.png         real faces; samples/fakes-STEP.png: the fixed-noise grid at STEP
    checkpoints/ckpt-STEP.pt training checkpoints; checkpoints/best.pt: the best by the eval metric
    generator.safetensors    the exported generator of the last step
    eval-*.json              results of `fakefacegen evaluate RUN --out RUN/eval-NAME.json`
    .lock                    held by the training process
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text

RUN_RE = re.compile(r"^(\d{5})-")
CONFIG_FILE = "config.json"
STATUS_FILE = "run.json"
LOG_FILE = "log.jsonl"
LOCK_FILE = ".lock"
LOSSES_PLOT = "losses.png"
METRICS_PLOT = "metrics.png"
SAMPLES_DIR = "samples"
REAL_GRID = "real.png"
FAKES_RE = re.compile(r"^fakes-(\d+)\.png$")
FAKES_GLOB = "fakes-*.png"
CHECKPOINTS_DIR = "checkpoints"
CKPT_RE = re.compile(r"^ckpt-(\d{8})\.pt$")
BEST_CKPT = "best.pt"
GENERATOR_FILE = "generator.safetensors"
EVAL_GLOB = "eval-*.json"


class RunDir:
    """The paths inside one run directory (names only: nothing is created or read)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config = property(lambda self: self.path / CONFIG_FILE)
    status = property(lambda self: self.path / STATUS_FILE)
    log = property(lambda self: self.path / LOG_FILE)
    lock = property(lambda self: self.path / LOCK_FILE)
    losses_plot = property(lambda self: self.path / LOSSES_PLOT)
    metrics_plot = property(lambda self: self.path / METRICS_PLOT)
    samples = property(lambda self: self.path / SAMPLES_DIR)
    real_grid = property(lambda self: self.samples / REAL_GRID)
    checkpoints = property(lambda self: self.path / CHECKPOINTS_DIR)
    best_checkpoint = property(lambda self: self.checkpoints / BEST_CKPT)
    generator = property(lambda self: self.path / GENERATOR_FILE)

    def fakes_grid(self, step: int) -> Path:
        return self.samples / f"fakes-{step:08d}.png"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"ckpt-{step:08d}.pt"

    def is_run(self) -> bool:
        """Whether this looks like a run directory (it has a config.json)."""
        return self.config.is_file()

    @staticmethod
    def of_file(path: str | Path) -> RunDir | None:
        """The run directory a checkpoint (``RUN/checkpoints/X.pt``) or an export (``RUN/X.safetensors``)
        lies in, or None."""
        path = Path(path)
        if path.parent.name == CHECKPOINTS_DIR and RunDir(path.parent.parent).is_run():
            return RunDir(path.parent.parent)
        if path.suffix == ".safetensors" and RunDir(path.parent).is_run():
            return RunDir(path.parent)
        return None


class RunDirError(RuntimeError):
    """The run directory cannot be created, locked or used; the message names it."""


def new_run_dir(outdir: str | Path, name: str) -> Path:
    """Create ``outdir/NNNNN-name`` with the next free number (never reuses an existing one)."""
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"{outdir}: cannot create the runs directory ({e.strerror})") from None
    if not os.access(outdir, os.W_OK):
        raise RunDirError(f"{outdir}: no write permission")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"
    while True:
        nums = [int(m.group(1)) for p in outdir.iterdir() if (m := RUN_RE.match(p.name))]
        run = outdir / f"{max(nums, default=0) + 1:05d}-{safe}"
        try:
            run.mkdir()
            return run
        except FileExistsError:  # another process took this number a moment ago
            continue
        except OSError as e:
            raise RunDirError(f"{run}: cannot create the run directory ({e.strerror})") from None


class RunLock:
    """An exclusive advisory lock on ``run_dir/.lock`` held for the life of a training process.

    flock locks vanish when their process dies, so a killed run never leaves a stale lock.
    """

    def __init__(self, run_dir: str | Path):
        self.path = RunDir(run_dir).lock
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise RunDirError(
                    f"{self.path.parent}: run directory is in use by another training process "
                    f"(pid {holder}); refusing to share it"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def write_status(run_dir: str | Path, status: str, **info: Any) -> None:
    """``run.json``: running | complete | interrupted | failed, with the step and a message.

    Replaced atomically (temp file + rename), so a kill never leaves a torn run.json."""
    path = RunDir(run_dir).status
    data = {"status": status, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def write_status_safely(run_dir: str | Path, status: str, **info: Any) -> bool:
    """``write_status`` for error paths: a failure to write (e.g. a full disk) must not hide the
    error being reported, so it is swallowed; returns whether run.json was written."""
    try:
        write_status(run_dir, status, **info)
        return True
    except OSError:
        return False


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The content of ``run.json`` ({} when missing or unreadable)."""
    try:
        status = json.loads(RunDir(run_dir).status.read_text())
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def append_log(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record to a log.jsonl (a killed writer leaves at most a torn last line, which
    :func:`read_log` skips and :func:`cut_log` removes)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _step(rec: dict[str, Any]) -> int | None:
    step = rec.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def _parse(lines: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) of the lines that are a JSON object; torn or foreign lines are dropped."""
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append((line, rec))
    return out


def _once_per_step(items: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """Each (kind, step) once: the last one written, at its place (an earlier one is a step that was
    redone after a resume or a roll-back); records without a step are all kept."""
    seen: set[tuple[Any, int]] = set()
    kept = []
    for line, rec in reversed(items):
        step = _step(rec)
        if step is not None:
            key = (rec.get("kind"), step)
            if key in seen:
                continue
            seen.add(key)
        kept.append((line, rec))
    kept.reverse()
    return kept


def _read_lines(path: str | Path) -> list[str] | None:
    try:
        with open(path, errors="replace") as f:
            return f.readlines()
    except OSError:
        return None


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a log.jsonl, in order, each (kind, step) once; [] when it is missing or unreadable.

    Lines that are not a JSON object (a torn last line of a run being written) are skipped; a step
    logged twice (a log written before resumes cut it back, see :func:`cut_log`) counts once: its last record."""
    lines = _read_lines(path)
    return [] if lines is None else [rec for _, rec in _once_per_step(_parse(lines))]


def cut_log(path: str | Path, step: int) -> int:
    """Cut a log.jsonl back to ``step`` (the step of the checkpoint a run resumes from, or rolls back
    to), atomically: records of later steps, torn lines and repeated steps are removed, the rest is
    kept byte for byte. Returns how many lines were removed (0: the file is left untouched)."""
    lines = _read_lines(path)
    if not lines:
        return 0
    kept = [line for line, rec in _once_per_step(_parse(lines)) if (_step(rec) or 0) <= step]
    if len(kept) == len(lines):
        return 0
    atomic_write_text(path, "".join(line if line.endswith("\n") else line + "\n" for line in kept))
    return len(lines) - len(kept)
