"""Atomic file writing: the one place that writes a file through a temp file and a rename.

A write goes to ``.NAME.PID.tmp`` next to the target, is fsynced, then renamed over it (and the
directory fsynced), so a reader, or a run resumed after ``kill -9``, sees the old file or the new
one, never a torn one. :func:`remove_stale_temps` deletes the temp files of writers that were killed.

Three entry points for three kinds of writer: :func:`atomic_write` (a callback that writes to a
binary file), :func:`atomic_write_bytes` / :func:`atomic_write_text` (the content at hand) and
:func:`atomic_save` (a library that wants a file name: PIL, ONNX, TorchScript, numpy memmaps).
A whole directory (a prepared dataset) is assembled in :func:`temp_dir` (``.NAME.PID.tmp-XXXX``)
and renamed into place by its writer; :func:`remove_stale_temps` removes those of dead writers too.
:func:`check_free_space` refuses a big write up front with a one-line error (needed, free bytes).

Test hook: ``FAKEFACEGEN_TEST_SLOW_WRITE=SECONDS`` sleeps that long between writing a temp file
and renaming it in the writes that ask for it (``slow_write_hook=True``: checkpoints and generator
exports), so tests that kill a training process land inside a checkpoint write often.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_RE = re.compile(r"^\..+\.(\d+)\.tmp$")  # temp_path's names: .NAME.PID.tmp
TMP_DIR_RE = re.compile(r"^\.(.+)\.(\d+)\.(tmp|old)-[A-Za-z0-9_]+$")  # temp_dir's: .NAME.PID.tmp-XXXX (or old-)
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


def temp_dir(path: Path, kind: str = "tmp") -> Path:
    """A new hidden directory ``.NAME.PID.KIND-XXXX`` next to ``path`` (KIND: 'tmp' to assemble the
    new content in, 'old' to hold the content it replaces until the rename is done)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.{kind}-", dir=path.parent))


def stale_owner(p: Path) -> int | None:
    """The pid in the name of a temp file or temp directory whose writer is gone, else None."""
    m = TMP_RE.match(p.name) or TMP_DIR_RE.match(p.name)
    if m is None:
        return None
    pid = int(m.group(1) if m.re is TMP_RE else m.group(2))
    return pid if pid != os.getpid() and not _pid_alive(pid) else None


def remove_stale_temps(directory: str | Path, *, name: str | None = None) -> list[Path]:
    """Delete temp files and temp directories left in ``directory`` by writers that were killed (their
    pid is gone); with ``name``, only those of that target. Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for p in entries:
        if stale_owner(p) is None:
            continue
        if name is not None and not p.name.startswith(f".{name}."):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


class NoSpaceError(OSError):
    """A write that does not fit on its file system (errno ENOSPC); the message is one line naming
    what was to be written, the bytes needed and the bytes free."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


def free_bytes(directory: str | Path) -> int | None:
    """Free bytes on the file system holding ``directory`` (None when it cannot be told)."""
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def space_message(what: str | Path, needed: int, free: int | None) -> str:
    """'WHAT: not enough free disk space: 1.2 GiB needed (N bytes), 0.5 GiB free (M bytes)'."""
    have = "an unknown amount free" if free is None else f"{_size(free)} free ({free} bytes)"
    return f"{what}: not enough free disk space: {_size(needed)} needed ({needed} bytes), {have}"


def check_free_space(directory: str | Path, needed: int, what: str | Path) -> None:
    """Raise :class:`NoSpaceError` naming ``what`` (the file or folder to be written), the bytes needed
    and the bytes free, unless the file system holding ``directory`` has ``needed`` bytes free."""
    free = free_bytes(directory)
    if free is not None and free < needed:
        raise NoSpaceError(space_message(what, needed, free))


def reserve(path: str | Path, size: int) -> None:
    """Allocate ``size`` bytes of disk for the file at ``path`` (posix_fallocate), so that writes through
    a memory map can never fail later (a full disk under a memory map is SIGBUS, not an error).
    Raises :class:`NoSpaceError` when they do not fit; a file system without fallocate is left as is."""
    if size <= 0 or not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise NoSpaceError(space_message(path, size, free_bytes(Path(path).parent))) from None
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def _size(n: int) -> str:
    """``n`` bytes for a reader: 512 bytes, 3.2 MiB, 1.5 GiB."""
    x, unit = float(n), "bytes"
    for u in ("KiB", "MiB", "GiB", "TiB"):
        if x < 1024:
            break
        x, unit = x / 1024, u
    return f"{n} bytes" if unit == "bytes" else f"{x:.1f} {unit}"


def warn(message: str) -> None:
    """One line on stderr: what a writer cleaned up or ignored."""
    print(f"note: {message}", file=sys.stderr)


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
