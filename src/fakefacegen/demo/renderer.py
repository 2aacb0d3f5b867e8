"""The render cache and workers: single faces and everything else render in two lanes (one thread each,
see :mod:`.lanes`), identical requests in flight share one render, waiting single faces share one
forward pass, each lane admits work only within its cost budget (more gets a 503 with Retry-After),
and rendered bytes sit in a byte-bounded LRU cache keyed by the request, with ETags that change with
the model's weights."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from ..directions import Directions
from ..editing import edit_latent
from ..generate import LoadedGenerator
from ..images import upscale
from .lanes import Costs, Lane
from .params import Edit, FaceId
from .pictures import FaceItem, Walker, edited_end, encode_png, face_pngs, grid_png, walk_image

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


class Renderer:
    """Renders images for the routes in two lanes (see :mod:`.lanes`): single faces on one worker thread,
    everything else on another, with single-flight (identical requests share one render), a cost budget
    per lane and per client (503 + Retry-After past it) and a byte-bounded cache. ``dirs``: the model's
    attribute directions (None: it has none, and nothing is edited)."""

    def __init__(
        self,
        G: LoadedGenerator,
        *,
        cache_bytes: int = 64 << 20,
        max_pending: int = 32,
        queue_seconds: float = 60.0,
        face_queue_seconds: float = 4.0,
        costs: Costs | None = None,
        dirs: Directions | None = None,
    ):
        self.G = G
        self.dirs = dirs
        self.cache = LRUBytes(cache_bytes)
        self.inflight: dict[str, asyncio.Future] = {}
        self.renders = 0
        self.costs = costs or Costs.measure(G)
        self.heavy = Lane("render", queue_seconds * 1000, max_items=max_pending)
        self.cheap = Lane("face", face_queue_seconds * 1000, max_items=4 * self.max_face_batch)
        self.model_id = model_hash(G)
        # an edited image's key names its directions too: another directions file for the same weights
        # (a refit) must not be answered with the old edit's ETag or cache entry
        self.dirs_id = directions_hash(dirs) if dirs is not None else ""
        self._faces: list[tuple[FaceItem, asyncio.Future, float, str]] = []
        self._draining = False

    max_face_batch = 64

    def etag(self, key: str) -> str:
        return '"' + hashlib.sha1(f"{self.model_id}|{key}".encode()).hexdigest()[:24] + '"'

    async def _fetch(self, key: str, start: Callable[[], asyncio.Future]) -> bytes:
        """The bytes for ``key``: from the cache, from an identical render in flight, or from the
        future that ``start()`` returns (a new render; it raises Busy when its lane is full)."""
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        fut = self.inflight.get(key)
        if fut is None:
            fut = start()
            self.inflight[key] = fut
            fut.add_done_callback(functools.partial(self._done, key))
        # shield: a client that hangs up must not cancel a render other clients are waiting for
        return await asyncio.shield(fut)

    async def get(self, key: str, fn: Callable[[], bytes], cost_ms: float, client: str = "") -> bytes:
        """The bytes for ``key``: from the cache, an identical render in flight, or ``fn`` in the render lane."""
        return await self._fetch(key, lambda: self.heavy.submit(functools.partial(self._run, fn), cost_ms, client))

    async def get_face(
        self,
        key: str,
        face: FaceId,
        truncation: float | None,
        scale: int,
        cost_ms: float,
        client: str = "",
        edit: Edit = (),
    ) -> bytes:
        """Like :meth:`get` for single faces (``edit``: an attribute edit, see :mod:`.params`), in the face
        lane; faces waiting at the same time share one forward pass (on CPU a batch of 16 costs about 6
        single faces)."""

        def start() -> asyncio.Future:
            self.cheap.admit(cost_ms, client)
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            self._faces.append(((face, truncation, scale, edit), fut, cost_ms, client))
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
                est = sum(x[2] for x in batch)
                t0 = time.perf_counter()
                try:
                    out = await loop.run_in_executor(
                        self.cheap.executor, self._run, lambda b=batch: self.faces([x[0] for x in b])
                    )
                except Exception as e:  # every waiter gets the failure, none hangs
                    for x in batch:
                        if not x[1].done():
                            x[1].set_exception(e)
                    continue
                finally:
                    self.cheap.learn(est, time.perf_counter() - t0)
                    for x in batch:
                        self.cheap.release(x[2], x[3])
                for x, png in zip(batch, out):
                    if not x[1].done():
                        x[1].set_result(png)
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
        self.heavy.close()
        self.cheap.close()

    # -- the images (see pictures.py) --------------------------------------------------------
    def grid(self, seed: int, n: int, truncation: float | None, cols: int, pad: int, scale: int) -> bytes:
        return grid_png(self.G, seed, n, truncation, cols, pad, scale)

    def faces(self, items: list[FaceItem]) -> list[bytes]:
        """PNGs of several faces (each with its own truncation, scale and edit) from one forward pass."""
        return face_pngs(self.G, items, self.dirs)

    def walk(
        self,
        a: Walker,
        b: Walker,
        frames: int,
        truncation: float | None,
        scale: int,
        fmt: str,
        fps: float = 12.0,
        edits: tuple[Edit, Edit] = ((), ()),
    ) -> bytes:
        """The walk a -> b; ``edits``: the attribute edits of a and of b (the walk runs between the edited faces)."""
        a, b = (edited_end(self.G, self.dirs, x, e, truncation) for x, e in zip((a, b), edits))
        return walk_image(self.G, a, b, frames, truncation, scale, fmt, fps)

    def latent_png(self, latent: np.ndarray, scale: int, edit: Edit = ()) -> bytes:
        """The face of a projected photo's latent, ``edit`` applied, ``scale`` times as large."""
        if edit:
            assert self.dirs is not None, "an edit reached the renderer of a model without directions"
            latent = edit_latent(self.dirs, np.asarray(latent, np.float32), dict(edit))
        return encode_png(upscale(self.G.synthesize_latents(latent, "the projection"), scale)[0])


def directions_hash(dirs: Directions) -> str:
    """A short hash of the directions (names, normals, sigmas): part of every edited image's key."""
    h = hashlib.sha1(dirs.space.encode())
    for a in dirs.attributes:
        h.update(a.encode() + b"\0")
    h.update(np.ascontiguousarray(dirs.normals, np.float32).tobytes())
    h.update(np.ascontiguousarray(dirs.sigmas, np.float64).tobytes())
    return h.hexdigest()[:12]


def model_hash(G: LoadedGenerator) -> str:
    """A short hash of the weights: ETags must change when another model answers on the same address."""
    h = hashlib.sha1()
    for k, v in G.net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
