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

Layout: this module holds the app (routes, error pages) and serving it; :mod:`.params` validates
requests, :mod:`.renderer` schedules and caches renders, :mod:`.pictures` makes the images and
:mod:`.model_card` gathers the facts about the model.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..generate import LoadedGenerator
from .model_card import describe_model
from .params import (
    INDEX_MAX,
    MAX_FRAMES,
    MAX_GRID,
    MAX_SCALE,
    SEED_MAX,
    FaceId,
    Params,
    check_size,
)
from .renderer import LRUBytes, Renderer

__all__ = ["BackgroundServer", "LRUBytes", "bind", "create_app", "describe_model", "serve", "url_of"]


STATIC = Path(__file__).resolve().parent / "static"
# The page may load nothing from elsewhere: every script, style and image comes from this server.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


async def _image(
    request: Request,
    renderer: Renderer,
    key: str,
    render: Callable[[], bytes] | tuple[FaceId, float | None, int],
    media: str,
    filename: str,
) -> Response:
    """The image ``key``, from ``render()`` or, for a single face (face, truncation, scale), from a shared batch."""
    etag = renderer.etag(key)
    headers = {
        "ETag": etag,
        "Cache-Control": "no-cache",
        "Content-Disposition": f'inline; filename="{filename}"',
        "X-Content-Type-Options": "nosniff",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    body = await (renderer.get_face(key, *render) if isinstance(render, tuple) else renderer.get(key, render))
    return Response(body, media_type=media, headers=headers)


def create_app(G: LoadedGenerator, *, cache_bytes: int = 64 << 20, max_pending: int = 128) -> Starlette:
    """The demo app for a loaded generator; ``app.state.renderer`` holds its worker and cache."""
    renderer = Renderer(G, cache_bytes=cache_bytes, max_pending=max_pending)
    info = describe_model(G)
    info["model_id"] = renderer.model_id
    R = G.resolution

    async def index(request: Request) -> Response:
        return FileResponse(
            STATIC / "index.html",
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

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
        check_size(rows * (R + pad) * scale + pad * scale, cols * (R + pad) * scale + pad * scale, "the grid")
        key = f"grid|{seed}|{n}|{t}|{cols}|{pad}|{scale}"
        return await _image(
            request,
            renderer,
            key,
            lambda: renderer.grid(seed, n, t, cols, pad, scale),
            "image/png",
            f"faces-seed{seed}.png",
        )

    async def face(request: Request) -> Response:
        p = Params(request, {"seed", "index", "truncation", "scale"})
        f = FaceId(p.int("seed", None, 0, SEED_MAX), p.int("index", 0, 0, INDEX_MAX))
        t, scale = p.truncation(), p.int("scale", 1, 1, MAX_SCALE)
        check_size(R * scale, R * scale, "the face")
        key = f"face|{f}|{t}|{scale}"
        return await _image(request, renderer, key, (f, t, scale), "image/png", f"seed{f.seed}-{f.index:05d}.png")

    def walk(fmt: str) -> Callable:
        allowed = {"a", "b", "frames", "truncation", "scale"} | ({"fps"} if fmt == "gif" else set())

        async def route(request: Request) -> Response:
            p = Params(request, allowed)
            a, b = p.face("a"), p.face("b")
            frames = p.int("frames", 8 if fmt == "png" else 24, 2, MAX_FRAMES)
            t, scale = p.truncation(), p.int("scale", 1, 1, MAX_SCALE)
            fps = p.float("fps", 12.0, 1.0, 60.0) if fmt == "gif" else 0.0
            w = (frames * (R + 2) + 2) * scale if fmt == "png" else R * scale
            check_size(R * scale + 4 * scale, w, "the walk")
            key = f"walk|{fmt}|{a}|{b}|{frames}|{t}|{scale}|{fps}"
            return await _image(
                request,
                renderer,
                key,
                lambda: renderer.walk(a, b, frames, t, scale, fmt, fps),
                f"image/{fmt}",
                f"walk-{a.seed}-{a.index}-{b.seed}-{b.index}.{fmt}",
            )

        return route

    async def http_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            status = exc.status_code
            msg = {
                404: f"no such page: {request.url.path}",
                405: f"method {request.method} is not allowed for {request.url.path}; use GET",
            }.get(status, exc.detail)
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
    app = Starlette(
        routes=routes, exception_handlers={HTTPException: http_error, Exception: http_error}, lifespan=lifespan
    )
    app.state.renderer = renderer
    app.state.info = info
    return app


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
    cfg = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        limit_concurrency=512,
        timeout_graceful_shutdown=2,
        lifespan="on",
    )
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
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True, name="fakefacegen-demo"
        )

    def start(self, timeout: float = 30.0) -> BackgroundServer:
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

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
