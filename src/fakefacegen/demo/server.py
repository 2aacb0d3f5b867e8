"""The demo's web server: a Starlette app around one loaded generator.

Routes (all GET; every query parameter is validated, and any error is a 4xx with a one-line JSON
body ``{"error": "..."}``, never a stack trace):

    /                 the page (static/index.html); its state lives in the URL: ?seed=S&n=16&truncation=0.7
    /static/...       the page's script and style, served by the package (nothing from a CDN)
    /api/model        JSON: which model is loaded (name, resolution, images seen, FID) and the limits
    /api/grid.png     ?seed&n&truncation&cols&pad&scale   n faces of one seed as one PNG grid
    /api/face.png     ?seed&index&truncation&scale         face ``index`` of ``seed``
    /api/walk.png     ?a=SEED:INDEX&b=SEED:INDEX&frames&truncation&scale   the slerp walk a -> b as a strip
    /api/walk.gif     same, plus fps: the walk as a looping (there and back) animation

Face ``index`` of ``seed`` is image ``index`` of ``G.sample(n, seed)`` (the noise of (seed, index)), so
the page, ``fakefacegen generate --seed S`` and a shared link all show the same faces.

Load: the model is loaded once; rendering (generator + PNG/GIF encoding) runs on one worker thread,
off the event loop, so torch's own threads are not oversubscribed by parallel forward passes.
Identical requests in flight share one render; at most ``max_pending`` distinct renders wait
(more get a 503), rendered images sit in a byte-bounded LRU cache, and every image carries an ETag
(model hash + parameters), so a revalidating browser gets a 304 without a render.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import math
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..generate import LoadedGenerator, bundled_model_path, noise
from ..images import make_grid

STATIC = Path(__file__).resolve().parent / "static"

SEED_MAX = 2**32 - 1
INDEX_MAX = 2**31 - 1
MAX_GRID = 64
TRUNCATION_RANGE = (0.3, 1.0)
MAX_FRAMES = 64
MAX_SCALE = 8
MAX_SIDE = 4096  # longest side of any image the server renders (bounds the memory of one render)
PNG_LEVEL = 3    # zlib level: level 9 is ~3x slower for a few % smaller PNGs, a poor trade for a local page

# The page may load nothing from elsewhere: every script, style and image comes from this server.
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class BadRequest(HTTPException):
    """A 400 whose detail is the one-line message the client sees."""

    def __init__(self, message: str):
        super().__init__(400, message)


# --------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class FaceId:
    """One face: image ``index`` of ``seed``."""

    seed: int
    index: int

    def __str__(self) -> str:
        return f"{self.seed}:{self.index}"


class Params:
    """Strict query parsing: unknown or repeated parameters and bad values are a :class:`BadRequest`."""

    def __init__(self, request: Request, allowed: set[str]):
        q = request.query_params
        for key in q.keys():
            if key not in allowed:
                raise BadRequest(f"unknown parameter {key!r} for {request.url.path} "
                                 f"(allowed: {', '.join(sorted(allowed))})")
            if len(q.getlist(key)) > 1:
                raise BadRequest(f"parameter {key!r} is given more than once")
        self.q = q

    def int(self, name: str, default: int | None, lo: int, hi: int) -> int:
        raw = self.q.get(name)
        if raw is None:
            if default is None:
                raise BadRequest(f"missing parameter {name!r} (an integer {lo}..{hi})")
            return default
        if not re.fullmatch(r"[+-]?\d{1,20}", raw.strip()):
            raise BadRequest(f"{name} must be an integer {lo}..{hi}, got {raw[:40]!r}")
        v = int(raw)
        if not lo <= v <= hi:
            raise BadRequest(f"{name} must be an integer {lo}..{hi}, got {v}")
        return v

    def float(self, name: str, default: float, lo: float, hi: float) -> float:
        raw = self.q.get(name)
        if raw is None:
            return default
        try:
            v = float(raw)
        except ValueError:
            raise BadRequest(f"{name} must be a number {lo:g}..{hi:g}, got {raw[:40]!r}") from None
        if not (math.isfinite(v) and lo <= v <= hi):
            raise BadRequest(f"{name} must be a number {lo:g}..{hi:g}, got {raw[:40]!r}")
        return v

    def truncation(self) -> float | None:
        """``truncation``: absent, empty or 'off' = plain normal noise; else a number in TRUNCATION_RANGE."""
        raw = self.q.get("truncation")
        if raw is None or raw.strip().lower() in ("", "off", "none"):
            return None
        lo, hi = TRUNCATION_RANGE
        v = self.float("truncation", 0.0, lo, hi)
        return round(v, 4)  # 0.7 and 0.70000001 are the same faces; keep one cache entry

    def face(self, name: str) -> FaceId:
        raw = self.q.get(name)
        if raw is None:
            raise BadRequest(f"missing parameter {name!r} (a face as SEED:INDEX, e.g. {name}=42:3)")
        m = re.fullmatch(r"\s*(\d{1,10}):(\d{1,10})\s*", raw)
        if not m or int(m.group(1)) > SEED_MAX or int(m.group(2)) > INDEX_MAX:
            raise BadRequest(f"{name} must be a face as SEED:INDEX with SEED 0..{SEED_MAX} and INDEX "
                             f"0..{INDEX_MAX}, got {raw[:40]!r}")
        return FaceId(int(m.group(1)), int(m.group(2)))


def _check_size(h: int, w: int, what: str) -> None:
    if max(h, w) > MAX_SIDE:
        raise BadRequest(f"{what} would be {w}x{h} pixels; the limit is {MAX_SIDE} per side (lower scale or n)")


# --------------------------------------------------------------------------------------------
# Rendering (runs on the worker thread)


def _scale(images: np.ndarray, scale: int) -> np.ndarray:
    if scale == 1:
        return images
    h, w = images.shape[1:3]
    return np.stack([np.asarray(Image.fromarray(a).resize((w * scale, h * scale), Image.Resampling.LANCZOS))
                     for a in images])


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W, 3) -> PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def encode_gif(frames: np.ndarray, fps: float) -> bytes:
    """uint8 (F, H, W, 3) -> an endlessly looping animated GIF (same settings as ``interpolate``)."""
    ims = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=max(1, round(1000 / fps)),
                loop=0, optimize=False, disposal=1)
    return buf.getvalue()


def face_noise(z_dim: int, faces: list[FaceId], truncation: float | None) -> torch.Tensor:
    """(len(faces), z_dim): row k is the noise of ``faces[k]``, the row ``G.sample`` would use."""
    return torch.cat([noise(1, z_dim, f.seed, truncation=truncation, start=f.index) for f in faces])


def walk_noise(z_dim: int, a: FaceId, b: FaceId, frames: int, truncation: float | None) -> torch.Tensor:
    """(frames, z_dim): the spherical walk from face ``a`` (frame 0) to face ``b`` (last frame), exact ends."""
    from ..interpolate import slerp

    za, zb = face_noise(z_dim, [a, b], truncation)
    return slerp(za, zb, torch.linspace(0, 1, frames, dtype=torch.float64)).to(torch.float32)


# --------------------------------------------------------------------------------------------
# Bounded cache and worker


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
    def __init__(self, pending: int):
        super().__init__(503, f"server busy: {pending} renders already waiting; retry in a moment",
                         headers={"Retry-After": "1"})


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
            fut.add_done_callback(lambda f, key=key: self._done(key, f))
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
                batch, self._faces = self._faces[:self.max_face_batch], self._faces[self.max_face_batch:]
                try:
                    out = await loop.run_in_executor(self.executor, self._run,
                                                     lambda b=batch: self.faces([x[:3] for x in b]))
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

    def _run(self, fn: Callable[[], bytes]) -> bytes:
        self.renders += 1
        return fn()

    def _done(self, key: str, fut: asyncio.Future) -> None:
        self.inflight.pop(key, None)
        if not fut.cancelled() and fut.exception() is None:
            self.cache.put(key, fut.result())

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- the images -------------------------------------------------------------------------
    def grid(self, seed: int, n: int, truncation: float | None, cols: int, pad: int, scale: int) -> bytes:
        imgs = self.G.synthesize(noise(n, self.G.z_dim, seed, truncation=truncation))
        return encode_png(make_grid(_scale(imgs, scale), nrow=cols, pad=pad * scale))

    def faces(self, items: list[tuple[FaceId, float | None, int]]) -> list[bytes]:
        """PNGs of several faces (each with its own truncation and scale) from one forward pass."""
        z = torch.cat([face_noise(self.G.z_dim, [f], t) for f, t, _ in items])
        imgs = self.G.synthesize(z)
        return [encode_png(_scale(img[None], scale)[0]) for img, (_, _, scale) in zip(imgs, items)]

    def walk(self, a: FaceId, b: FaceId, frames: int, truncation: float | None, scale: int,
             fmt: str, fps: float = 12.0) -> bytes:
        imgs = _scale(self.G.synthesize(walk_noise(self.G.z_dim, a, b, frames, truncation)), scale)
        if fmt == "png":
            return encode_png(make_grid(imgs, nrow=frames, pad=2 * scale))
        # there and back, without showing either end twice in a row, so the loop has no stutter
        return encode_gif(np.concatenate([imgs, imgs[-2:0:-1]]), fps)


def model_hash(G: LoadedGenerator) -> str:
    """A short hash of the weights: ETags must change when another model answers on the same address."""
    h = hashlib.sha1()
    for k, v in G.net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Which model: name, resolution, images seen, FID


def _run_dir_of(path: Path) -> Path | None:
    if path.parent.name == "checkpoints" and (path.parent.parent / "config.json").is_file():
        return path.parent.parent
    if path.suffix == ".safetensors" and (path.parent / "config.json").is_file():
        return path.parent
    return None


def _fid_from_log(run_dir: Path, step: int | None) -> dict[str, Any] | None:
    """The FID logged for ``step`` in the run's log.jsonl (else the last one logged at or before it)."""
    log = run_dir / "log.jsonl"
    if not log.is_file():
        return None
    best = None
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a torn last line of a run being written
        if not isinstance(rec, dict) or rec.get("kind") != "eval" or not isinstance(rec.get("fid"), (int, float)):
            continue
        if step is not None and isinstance(rec.get("step"), int) and rec["step"] > step:
            continue
        best = rec
    if best is None:
        return None
    return {"fid": float(best["fid"]), "fid_n": best.get("n"), "fid_step": best.get("step"),
            "fid_source": f"{log.name} of {run_dir.name}"}


# "FID: 23.4", "FID = 23.4", "| FID (10k) | 23.4 |", "**FID** 23.4": the number right after the label,
# skipping a parenthesised note such as the sample count.
_FID_RE = re.compile(r"\bFID\b[*_]*(?:\s*\([^)\n]*\))?[*_]*\s*(?:[:=|]\s*)?[*_]*(\d+(?:\.\d+)?)")


def _card(path: Path) -> dict[str, Any]:
    """Facts from a model card beside a generator file: ``<stem>.json`` / ``model-card.json`` (keys name,
    fid, fid_n, images_seen) or ``<stem>.md`` / ``model-card.md`` (the first 'FID ... <number>')."""
    for cand in (path.with_suffix(".json"), path.parent / "model-card.json", path.parent / "model_card.json"):
        if cand.is_file() and cand != path:
            try:
                d = json.loads(cand.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(d, dict):
                out = {k: d[k] for k in ("name", "fid", "fid_n", "images_seen") if k in d}
                if "fid" in out:
                    out["fid_source"] = cand.name
                return out
    for cand in (path.with_suffix(".md"), path.parent / "model-card.md", path.parent / "MODEL_CARD.md",
                 path.parent / "README.md"):
        if cand.is_file():
            try:
                m = _FID_RE.search(cand.read_text(errors="replace"))
            except OSError:
                continue
            if m:
                return {"fid": float(m.group(1)), "fid_source": cand.name}
    return {}


def describe_model(G: LoadedGenerator) -> dict[str, Any]:
    """What the page shows about the loaded model; missing facts are None."""
    path = Path(G.source)
    meta = dict(G.meta or {})
    run_dir = _run_dir_of(path)
    bundled = path.resolve() == bundled_model_path().resolve()
    name = meta.get("name") or (run_dir.name if run_dir else path.stem)
    info: dict[str, Any] = {
        "name": name, "source": str(path), "bundled": bundled, "resolution": G.resolution, "z_dim": G.z_dim,
        "step": meta.get("step"), "images_seen": meta.get("images_seen"), "ema": meta.get("ema"),
        "fid": meta.get("fid"), "fid_n": meta.get("fid_n"), "fid_step": None,
        "fid_source": "model metadata" if meta.get("fid") is not None else None,
    }
    card = _card(path)
    for k, v in card.items():
        if info.get(k) is None:
            info[k] = v
    if info["fid"] is None and run_dir is not None:
        info.update(_fid_from_log(run_dir, meta.get("step")) or {})
    try:
        info["params"] = sum(p.numel() for p in G.net.parameters())
    except Exception:  # pragma: no cover - any nn.Module has parameters()
        info["params"] = None
    info["limits"] = {"max_grid": MAX_GRID, "truncation": list(TRUNCATION_RANGE), "max_frames": MAX_FRAMES,
                      "max_scale": MAX_SCALE, "max_side": MAX_SIDE, "seed_max": SEED_MAX}
    return info


# --------------------------------------------------------------------------------------------
# The app


async def _image(request: Request, renderer: Renderer, key: str, fn: Callable[[], bytes] | None, media: str,
                 filename: str, face: tuple[FaceId, float | None, int] | None = None) -> Response:
    etag = renderer.etag(key)
    headers = {"ETag": etag, "Cache-Control": "no-cache", "Content-Disposition": f'inline; filename="{filename}"',
               "X-Content-Type-Options": "nosniff"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    body = await (renderer.get_face(key, *face) if face is not None else renderer.get(key, fn))
    return Response(body, media_type=media, headers=headers)


def create_app(G: LoadedGenerator, *, cache_bytes: int = 64 << 20, max_pending: int = 128) -> Starlette:
    """The demo app for a loaded generator; ``app.state.renderer`` holds its worker and cache."""
    renderer = Renderer(G, cache_bytes=cache_bytes, max_pending=max_pending)
    info = describe_model(G)
    info["model_id"] = renderer.model_id
    R = G.resolution

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache",
                                     "X-Content-Type-Options": "nosniff"})

    async def model(request: Request) -> Response:
        Params(request, set())
        return JSONResponse(info, headers={"Cache-Control": "no-cache"})

    async def grid(request: Request) -> Response:
        p = Params(request, {"seed", "n", "truncation", "cols", "pad", "scale"})
        seed, n = p.int("seed", None, 0, SEED_MAX), p.int("n", 16, 1, MAX_GRID)
        t = p.truncation()
        cols = p.int("cols", max(1, math.ceil(math.sqrt(n))), 1, MAX_GRID)
        pad, scale = p.int("pad", 2, 0, 16), p.int("scale", 1, 1, MAX_SCALE)
        rows = math.ceil(n / cols)
        _check_size(rows * (R + pad) * scale + pad * scale, cols * (R + pad) * scale + pad * scale, "the grid")
        key = f"grid|{seed}|{n}|{t}|{cols}|{pad}|{scale}"
        return await _image(request, renderer, key, lambda: renderer.grid(seed, n, t, cols, pad, scale),
                            "image/png", f"faces-seed{seed}.png")

    async def face(request: Request) -> Response:
        p = Params(request, {"seed", "index", "truncation", "scale"})
        f = FaceId(p.int("seed", None, 0, SEED_MAX), p.int("index", 0, 0, INDEX_MAX))
        t, scale = p.truncation(), p.int("scale", 1, 1, MAX_SCALE)
        _check_size(R * scale, R * scale, "the face")
        key = f"face|{f}|{t}|{scale}"
        return await _image(request, renderer, key, None, "image/png", f"seed{f.seed}-{f.index:05d}.png",
                            face=(f, t, scale))

    def walk(fmt: str) -> Callable:
        allowed = {"a", "b", "frames", "truncation", "scale"} | ({"fps"} if fmt == "gif" else set())

        async def route(request: Request) -> Response:
            p = Params(request, allowed)
            a, b = p.face("a"), p.face("b")
            frames = p.int("frames", 8 if fmt == "png" else 24, 2, MAX_FRAMES)
            t, scale = p.truncation(), p.int("scale", 1, 1, MAX_SCALE)
            fps = p.float("fps", 12.0, 1.0, 60.0) if fmt == "gif" else 0.0
            w = (frames * (R + 2) + 2) * scale if fmt == "png" else R * scale
            _check_size(R * scale + 4 * scale, w, "the walk")
            key = f"walk|{fmt}|{a}|{b}|{frames}|{t}|{scale}|{fps}"
            return await _image(request, renderer, key, lambda: renderer.walk(a, b, frames, t, scale, fmt, fps),
                                f"image/{fmt}", f"walk-{a.seed}-{a.index}-{b.seed}-{b.index}.{fmt}")
        return route

    async def http_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            status = exc.status_code
            msg = {404: f"no such page: {request.url.path}",
                   405: f"method {request.method} is not allowed for {request.url.path}; use GET"}.get(status, exc.detail)
            headers = dict(exc.headers or {})
        else:
            status, msg, headers = 500, f"internal error while serving {request.url.path}: {type(exc).__name__}", {}
        msg = str(msg).strip().splitlines()[0] if str(msg).strip() else "error"
        return JSONResponse({"error": msg}, status_code=status, headers=headers)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        renderer.close()

    routes = [
        Route("/", index),
        Route("/api/model", model),
        Route("/api/grid.png", grid),
        Route("/api/face.png", face),
        Route("/api/walk.png", walk("png")),
        Route("/api/walk.gif", walk("gif")),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: http_error},
                    lifespan=lifespan)
    app.state.renderer = renderer
    app.state.info = info
    return app


# --------------------------------------------------------------------------------------------
# Serving


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0 = any free port); OSError names the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise OSError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(app: Starlette, log_level: str = "warning", access_log: bool = False):
    import uvicorn

    # limit_concurrency: past this many open connections + tasks uvicorn answers 503 instead of
    # queueing more (memory stays bounded even under a flood of slow clients)
    cfg = uvicorn.Config(app, log_level=log_level, access_log=access_log, limit_concurrency=512,
                         timeout_graceful_shutdown=2, lifespan="on")
    return uvicorn.Server(cfg)


def serve(app: Starlette, sock: socket.socket, *, log_level: str = "warning", access_log: bool = False) -> None:
    """Serve ``app`` on the bound socket until Ctrl+C."""
    _server(app, log_level, access_log).run(sockets=[sock])


class BackgroundServer:
    """The app served from a thread, for tests and notebooks: ``with BackgroundServer(app) as s: s.url``."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0):
        self.sock = bind(host, port)
        self.url = url_of(self.sock)
        self.server = _server(app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="fakefacegen-demo")

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() - t0 > timeout:
                raise RuntimeError(f"demo server at {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

