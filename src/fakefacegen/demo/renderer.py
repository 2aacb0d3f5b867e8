"""The render cache and worker: one thread renders, identical requests in flight share one render,
waiting single faces share one forward pass, at most ``max_pending`` renders wait (more get a 503),
and rendered bytes sit in a byte-bounded LRU cache keyed by the request, with ETags that change with
the model's weights."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from starlette.exceptions import HTTPException

from ..generate import LoadedGenerator
from .params import FaceId
from .pictures import face_pngs, grid_png, walk_image

T = TypeVar("T")


class LRUBytes:
    """An LRU cache of bytes values bounded by total size and entry count (event-loop thread only)."""

    def __init__(self, max_bytes: int = 64 << 20, max_items: int = 4096):
        self.max_bytes, self.max_items = int(max_bytes), int(max_items)
        self._d: OrderedDict[str, bytes] = OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = 0

    def get(self, key: str) -> bytes | None:
        v = self._d.get(key)
        if v is None:
            self.misses += 1
            return None
        self._d.move_to_end(key)
        self.hits += 1
        return v

    def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return  # larger than the whole cache: serve it, keep nothing
        old = self._d.pop(key, None)
        if old is not None:
            self.nbytes -= len(old)
        self._d[key] = value
        self.nbytes += len(value)
        while self.nbytes > self.max_bytes or len(self._d) > self.max_items:
            _, v = self._d.popitem(last=False)
            self.nbytes -= len(v)

    def __len__(self) -> int:
        return len(self._d)


class Busy(HTTPException):
    """A 503: ``max_pending`` renders are already waiting (the client retries after a second)."""

    def __init__(self, pending: int):
        super().__init__(
            503, f"server busy: {pending} renders already waiting; retry in a moment", headers={"Retry-After": "1"}
        )


class Renderer:
    """Renders images for the routes on one worker thread, with single-flight and a bounded queue."""

    def __init__(self, G: LoadedGenerator, *, cache_bytes: int = 64 << 20, max_pending: int = 128):
        self.G = G
        self.cache = LRUBytes(cache_bytes)
        self.max_pending = int(max_pending)
        self.inflight: dict[str, asyncio.Future] = {}
        self.renders = 0
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fakefacegen-render")
        self.model_id = model_hash(G)
        self.max_face_batch = 64
        self._faces: list[tuple[FaceId, float | None, int, asyncio.Future]] = []
        self._draining = False

    def etag(self, key: str) -> str:
        return '"' + hashlib.sha1(f"{self.model_id}|{key}".encode()).hexdigest()[:24] + '"'

    async def _fetch(self, key: str, start: Callable[[], asyncio.Future]) -> bytes:
        """The bytes for ``key``: from the cache, from an identical render in flight, or from the
        future that ``start()`` returns (a new render), unless too many renders are pending."""
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        fut = self.inflight.get(key)
        if fut is None:
            if len(self.inflight) >= self.max_pending:
                raise Busy(len(self.inflight))
            fut = start()
            self.inflight[key] = fut
            fut.add_done_callback(functools.partial(self._done, key))
        # shield: a client that hangs up must not cancel a render other clients are waiting for
        return await asyncio.shield(fut)

    async def get(self, key: str, fn: Callable[[], bytes]) -> bytes:
        """The bytes for ``key``: from the cache, from an identical render in flight, or rendered now."""
        return await self._fetch(key, lambda: asyncio.get_running_loop().run_in_executor(self.executor, self._run, fn))

    async def get_face(self, key: str, face: FaceId, truncation: float | None, scale: int) -> bytes:
        """Like :meth:`get` for single faces, but faces waiting at the same time share one forward pass:
        on CPU a batch of 16 costs about 6 single faces."""

        def start() -> asyncio.Future:
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            self._faces.append((face, truncation, scale, fut))
            if not self._draining:
                self._draining = True
                loop.create_task(self._drain_faces())
            return fut

        return await self._fetch(key, start)

    async def _drain_faces(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._faces:
                await asyncio.sleep(0)  # requests that arrived in this loop tick join the batch
                batch, self._faces = self._faces[: self.max_face_batch], self._faces[self.max_face_batch :]
                try:
                    out = await loop.run_in_executor(
                        self.executor, self._run, lambda b=batch: self.faces([x[:3] for x in b])
                    )
                except Exception as e:  # every waiter gets the failure, none hangs
                    for *_, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                for (*_, fut), png in zip(batch, out):
                    if not fut.done():
                        fut.set_result(png)
        finally:
            self._draining = False

    def _run(self, fn: Callable[[], T]) -> T:
        self.renders += 1
        return fn()

    def _done(self, key: str, fut: asyncio.Future) -> None:
        self.inflight.pop(key, None)
        if not fut.cancelled() and fut.exception() is None:
            self.cache.put(key, fut.result())

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- the images (see pictures.py) --------------------------------------------------------
    def grid(self, seed: int, n: int, truncation: float | None, cols: int, pad: int, scale: int) -> bytes:
        return grid_png(self.G, seed, n, truncation, cols, pad, scale)

    def faces(self, items: list[tuple[FaceId, float | None, int]]) -> list[bytes]:
        """PNGs of several faces (each with its own truncation and scale) from one forward pass."""
        return face_pngs(self.G, items)

    def walk(
        self, a: FaceId, b: FaceId, frames: int, truncation: float | None, scale: int, fmt: str, fps: float = 12.0
    ) -> bytes:
        return walk_image(self.G, a, b, frames, truncation, scale, fmt, fps)


def model_hash(G: LoadedGenerator) -> str:
    """A short hash of the weights: ETags must change when another model answers on the same address."""
    h = hashlib.sha1()
    for k, v in G.net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
