"""Work lanes: each lane renders on its own worker thread and admits work only while the estimated
cost of what it already holds (waiting + running) fits its budget, in total and per client.

The server keeps two: cheap single faces in one lane, everything expensive (grids, walks, photo
projections) in another, so a face never waits behind a walk. When a lane is full the request is a
503 with a ``Retry-After`` header (seconds until the lane's work is expected to be done), answered
before anything is rendered. Costs are estimates in milliseconds (see :class:`Costs`); the lane
corrects its Retry-After with the ratio of measured to estimated times."""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from starlette.exceptions import HTTPException

T = TypeVar("T")

# Measured on one core of a 2-core Zen3 with the bundled model (the ratio correction below absorbs
# other machines): Lanczos upscale + PNG level 3, and upscale + octree palette + LZW for GIF frames.
PNG_MS_PER_MPX = 250.0
GIF_MS_PER_MPX = 120.0
PERCEPTUAL_STEP_MS = 170.0  # the Inception's early layers at 128 px, forward + backward, one image
PROJECT_SETUP_MS = 1500.0  # loading the Inception (cached after the first) and scoring the starts


class Busy(HTTPException):
    """A 503 with Retry-After: the lane is full (in total, or for this client)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(503, message, headers={"Retry-After": str(retry_after)})


@dataclass
class Costs:
    """Estimated milliseconds of work: ``face_ms`` (a generator forward per image, in a batch) and
    ``step_ms`` (forward + backward of one image, a projection step without the perceptual loss),
    measured once when the server starts (on a busy machine they come out high, and so does every
    estimate: the budgets then hold less work, which is what a busy machine can do)."""

    face_ms: float
    step_ms: float

    @classmethod
    def measure(cls, G: Any) -> Costs:
        z = torch.zeros(8, G.z_dim)
        face, step = math.inf, math.inf
        for _ in range(4):  # the first round warms up (allocations, autograd's threads): the best of the rest
            t0 = time.perf_counter()
            G.synthesize(z)
            t1 = time.perf_counter()
            lat = torch.zeros(1, G.z_dim, device=G.device, requires_grad=True)
            G.net(lat).square().mean().backward()
            t2 = time.perf_counter()
            face, step = min(face, (t1 - t0) * 1000 / 8), min(step, (t2 - t1) * 1000)
        return cls(max(face, 0.01), max(step, 0.05))

    def image(self, generated: int, out_pixels: int, fmt: str = "png") -> float:
        per_mpx = GIF_MS_PER_MPX if fmt == "gif" else PNG_MS_PER_MPX
        return generated * self.face_ms + out_pixels / 1e6 * per_mpx

    def projection(self, steps: int, candidates: int, perceptual: bool) -> float:
        per_step = self.step_ms + (PERCEPTUAL_STEP_MS if perceptual else 0.0)
        return PROJECT_SETUP_MS + candidates * per_step / 2 + steps * per_step


class Lane:
    """One worker thread and a budget of estimated work (``budget_ms``), of which one client may hold
    at most ``client_share``, and at most ``max_items`` pieces of work (event-loop thread only)."""

    def __init__(self, name: str, budget_ms: float, *, client_share: float = 0.5, max_items: int = 64):
        self.name, self.budget_ms, self.client_share, self.max_items = name, float(budget_ms), client_share, max_items
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"fakefacegen-{name}")
        self.pending_ms = 0.0
        self.items = 0
        self.by_client: defaultdict[str, float] = defaultdict(float)
        self.ratio = 1.0  # measured / estimated time, a running average
        self.refused = 0

    @property
    def max_request_ms(self) -> float:
        """The most one request may cost: what one client may hold."""
        return self.budget_ms * self.client_share

    def retry_after(self) -> int:
        return int(min(120, max(1, math.ceil(self.pending_ms * self.ratio / 1000))))

    def check(self, cost_ms: float, client: str) -> None:
        """Raise :class:`Busy` unless ``cost_ms`` more for ``client`` would fit now."""
        if self.items >= self.max_items or self.pending_ms + cost_ms > self.budget_ms:
            self.refused += 1
            raise Busy(
                f"server busy: {self.items} {self.name} jobs already waiting (about {self.pending_ms / 1000:.0f} s "
                f"of work); retry in {self.retry_after()} s",
                self.retry_after(),
            )
        if self.by_client.get(client, 0.0) + cost_ms > self.max_request_ms:
            self.refused += 1
            raise Busy(
                f"server busy: your earlier {self.name} requests are still waiting (about "
                f"{self.by_client.get(client, 0.0) / 1000:.0f} s of work); retry in {self.retry_after()} s",
                self.retry_after(),
            )

    def admit(self, cost_ms: float, client: str) -> None:
        """Reserve ``cost_ms`` for ``client`` or raise :class:`Busy` (nothing reserved)."""
        self.check(cost_ms, client)
        self.pending_ms += cost_ms
        self.items += 1
        self.by_client[client] += cost_ms

    def release(self, cost_ms: float, client: str) -> None:
        self.pending_ms = max(0.0, self.pending_ms - cost_ms)
        self.items -= 1
        self.by_client[client] -= cost_ms
        if self.by_client[client] <= 1e-6:
            del self.by_client[client]

    def learn(self, estimated_ms: float, seconds: float) -> None:
        if estimated_ms > 0:
            self.ratio = 0.8 * self.ratio + 0.2 * min(100.0, max(0.01, seconds * 1000 / estimated_ms))

    def submit(self, fn: Callable[[], T], cost_ms: float, client: str) -> asyncio.Future:
        """Admit (or raise Busy), then run ``fn`` on the lane's thread; the reservation is released
        when it finishes, whether or not anyone still waits for it."""
        self.admit(cost_ms, client)

        def timed() -> T:
            t0 = time.perf_counter()
            try:
                return fn()
            finally:
                self.learn(cost_ms, time.perf_counter() - t0)  # a float update: safe from the worker

        try:
            fut = asyncio.get_running_loop().run_in_executor(self.executor, timed)
        except BaseException:
            self.release(cost_ms, client)
            raise
        fut.add_done_callback(lambda _f: self.release(cost_ms, client))
        return fut

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
