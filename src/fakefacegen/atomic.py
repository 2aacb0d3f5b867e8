"""Atomic file writing: the one place that writes a file through a temp file and a rename.

A write goes to ``.NAME.PID.tmp`` next to the target, is fsynced, then renamed over it (and the
directory fsynced), so a reader, or a run resumed after ``kill -9``, sees the old file or the new
one, never a torn one. :func:`remove_stale_temps` deletes the temp files of writers that were killed.

Three entry points for three kinds of writer: :func:`atomic_write` (a callback that writes to a
binary file), :func:`atomic_write_bytes` / :func:`atomic_write_text` (the content at hand) and
:func:`atomic_save` (a library that wants a file name: PIL, ONNX, TorchScript, numpy memmaps).

Test hook: ``FAKEFACEGEN_TEST_SLOW_WRITE=SECONDS`` sleeps that long between writing a temp file
and renaming it in the writes that ask for it (``slow_write_hook=True``: checkpoints and generator
exports), so tests that kill a training process land inside a checkpoint write often.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_RE = re.compile(r"^\..+\.(\d+)\.tmp$")  # temp_path's names: .NAME.PID.tmp
SLOW_WRITE_ENV = "FAKEFACEGEN_TEST_SLOW_WRITE"


class _RecordingFile:
    """A binary file that remembers the OSError of a failed write.

    ``torch.save`` turns a failed write (e.g. ENOSPC) into an opaque ``RuntimeError: [enforce
    fail at inline_container.cc] unexpected pos``; keeping the OSError lets us report the cause.
    """

    def __init__(self, f: BinaryIO):
        self.f = f
        self.error: OSError | None = None

    def write(self, b) -> int:
        try:
            return self.f.write(b)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def temp_path(path: Path) -> Path:
    """Where the temp file for ``path`` goes: ``.NAME.PID.tmp`` in the same directory."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def fsync_path(path: str | Path) -> None:
    """fsync a file or directory so a rename that follows (or preceded) is durable; errors are ignored."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete temp files left in ``directory`` by writers that were killed (their pid is gone)."""
    removed: list[Path] = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = TMP_RE.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def atomic_save(path: str | Path, save_to: Callable[[Path], None], *, slow_write_hook: bool = False) -> Path:
    """Call ``save_to(temp_file_path)``, fsync, then rename the temp file over ``path``; returns ``path``.

    On failure the temp file is removed; an OSError with an errno (e.g. no space left) is raised
    again naming ``path`` and the cause, anything else as it came.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        save_to(tmp)
        fsync_path(tmp)
        slow = os.environ.get(SLOW_WRITE_ENV) if slow_write_hook else None
        if slow:  # test hook only (see module docstring): widen the window between write and rename
            time.sleep(float(slow))
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, f"cannot write: {e.strerror or os.strerror(e.errno)}", str(path)) from None
        raise
    fsync_path(path.parent)  # make the rename itself durable
    return path


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], *, slow_write_hook: bool = False) -> Path:
    """Call ``write(file)`` on a binary temp file, then commit it as :func:`atomic_save` does.

    A failed write inside ``write`` (e.g. ENOSPC under ``torch.save``, which hides it in a
    RuntimeError) is reported as the OSError naming ``path`` and the cause.
    """

    def save_to(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            rec = _RecordingFile(f)
            try:
                write(rec)  # type: ignore[arg-type]
            except Exception:
                if rec.error is not None:
                    raise OSError(rec.error.errno or errno.EIO, rec.error.strerror) from None
                raise

    return atomic_save(path, save_to, slow_write_hook=slow_write_hook)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode())
