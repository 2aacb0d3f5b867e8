"""Run directories: a new numbered directory per run, a lock so two processes never share one,
and a status file that says whether the run finished."""

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
        self.path = Path(run_dir) / ".lock"
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise RunDirError(f"{self.path.parent}: run directory is in use by another training process "
                                  f"(pid {holder}); refusing to share it") from None
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

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def write_status(run_dir: str | Path, status: str, **info: Any) -> None:
    """``run.json``: running | complete | interrupted | failed, with the step and a message.

    Replaced atomically (temp file + rename), so a kill never leaves a torn run.json."""
    path = Path(run_dir) / "run.json"
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
        return json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return {}
