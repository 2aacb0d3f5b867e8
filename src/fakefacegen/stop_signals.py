"""Stopping a training run on SIGINT/SIGTERM: the first signal asks for a checkpoint at the end of
the step and a clean stop; a second one aborts at once (no checkpoint for that step)."""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

from . import distributed as dist


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was written."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class StopSignals:
    """The signal handler of a run and what it has seen. Under torchrun the processes agree on the
    stop once per step (``flag`` in, :meth:`agreed` out), so that all stop after the same step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, is_main: bool):
        self.is_main = is_main
        self.signum: int | None = None
        self.time = 0.0

    def install(self) -> dict[int, Any]:
        """Handle SIGINT/SIGTERM from now on; returns the previous handlers, for :meth:`restore`."""
        return {s: signal.signal(s, self.handle) for s in self.SIGNALS}

    @staticmethod
    def restore(old: dict[int, Any]) -> None:
        for s, h in old.items():
            signal.signal(s, h)

    def handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        now = time.monotonic()
        if self.signum is not None:  # second Ctrl-C: stop now
            # ...unless it is torchrun passing on the Ctrl-C this process got from the terminal too.
            if dist.launched_by_torchrun() and now - self.time < 3.0:
                return
            raise KeyboardInterrupt
        self.signum, self.time = signum, now
        if self.is_main:
            print(
                f"\n{signal.Signals(signum).name} received: finishing this step and writing a checkpoint "
                f"(press Ctrl-C again to abort without one)",
                file=sys.stderr,
            )

    def flag(self) -> float:
        """1.0 if this process got a signal, for the step's agreement between processes."""
        return float(self.signum is not None)

    def agreed(self, flag: float) -> int | None:
        """The signal to stop for, given the agreed flag (SIGTERM when only another process got one); None: go on."""
        if not flag:
            return None
        if self.signum is None:
            self.signum = signal.SIGTERM
        return self.signum
