"""The training log's 'train' lines: running sums of the step statistics between two log lines,
and the record they make (means, images per second, elapsed time). The sums travel in the checkpoint
(:meth:`LogWindow.state_dict`), so a run resumed, or rolled back, between two log lines writes the
same means as an uninterrupted one."""

from __future__ import annotations

import time
from typing import Any

from .config import TrainConfig

STATS = ("loss_d", "loss_g", "d_real", "d_fake", "r1", "r2")
"""The per-step statistics, in the order the loop agrees on them between processes."""


class LogWindow:
    """The steps since the last 'train' log line."""

    def __init__(self) -> None:
        self._reset(time.perf_counter())

    def _reset(self, now: float) -> None:
        self.sums = dict.fromkeys(STATS, 0.0)
        self.n = 0
        self.tick, self.images = now, 0

    def state_dict(self) -> dict[str, Any]:
        """The steps since the last log line (for the checkpoint): their count and sums."""
        return {"n": self.n, "sums": dict(self.sums)}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Start from a checkpoint's window (None: an older checkpoint, written at a log line); the
        images-per-second clock restarts now."""
        self._reset(time.perf_counter())
        if state:
            self.n = int(state["n"])
            self.sums.update({k: float(v) for k, v in state["sums"].items() if k in self.sums})

    def add(self, stats: list[float], images: int) -> None:
        """One step's statistics (in :data:`STATS` order) over ``images`` images."""
        for k, v in zip(STATS, stats):
            self.sums[k] += v
        self.n += 1
        self.images += images

    def record(self, step: int, images_seen: int, elapsed: float, t: TrainConfig) -> dict[str, Any]:
        """The log line for the window (R1/R2 only when enabled), which then starts afresh."""
        now = time.perf_counter()
        rec: dict[str, Any] = {
            "kind": "train",
            "step": step,
            "images_seen": images_seen,
            **{k: self.sums[k] / self.n for k in ("loss_d", "loss_g", "d_real", "d_fake")},
            "img_per_s": self.images / max(now - self.tick, 1e-9),  # since the last line or (re)start
            "elapsed_s": round(elapsed, 2),
        }
        for reg in ("r1", "r2"):
            if getattr(t, f"{reg}_gamma"):
                rec[reg] = self.sums[reg] / self.n
        self._reset(now)
        return rec
