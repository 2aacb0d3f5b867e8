"""The demo's web server: a Starlette app around one loaded generator.

Routes (every query parameter is validated against the ranges in :mod:`.params`, and any error is a
4xx with a one-line JSON body ``{"error": "..."}``, never a stack trace):

    GET  /                 the page (static/index.html); its state lives in the URL: ?seed=S&n=16&truncation=0.7
    GET  /static/...       the page's script and style, served by the package (nothing from a CDN)
    GET  /api/model        JSON: which model is loaded (name, resolution, images seen, FID), the limits
                           and, under "editing", what /api/attributes answers
    GET  /api/attributes   JSON: the attributes this model can edit (name, the classifier's held-out
                           accuracy and AUC, a recommended slider range), or why it can edit none
    GET  /api/grid.png     ?seed&n&truncation&cols&pad&scale   n faces of one seed as one PNG grid
    GET  /api/face.png     ?seed&index&truncation&scale&edit    face ``index`` of ``seed``, ``edit`` applied
    GET  /api/walk.png     ?a&b&edit_a&edit_b&frames&truncation&scale   the slerp walk a -> b as a strip; a
                           and b are faces (SEED:INDEX) or projected photos (photo:ID), each edited by its
                           edit_a / edit_b
    GET  /api/walk.gif     same, plus fps: the walk as a looping (there and back) animation
    POST /api/project      ?steps   body: a photo (JPEG/PNG/WebP); 202 + JSON {id, state, ...}: its
                           projection is queued (see :mod:`.projection`: in memory only, never written)
    GET  /api/projection   ?id      JSON: the projection's state, progress (step of steps) and distances
    GET  /api/projection.png  ?id&scale&edit  the projected face, once done, ``edit`` applied

An edit is ``edit=Smiling:2,Young:-1``: attribute names the model offers and amounts in sigmas (see
:mod:`fakefacegen.editing`); the face is ``G.edit`` of the same seed, index, truncation and edit
(``editing.latent_for`` + ``editing.edit_latent``, then one render). A model without directions
(``NAME-directions.json`` beside it) offers no attributes, and any edit is a 400 saying why.

Face ``index`` of ``seed`` is image ``index`` of ``G.sample(n, seed)`` (the noise of (seed, index)), so
the page, ``fakefacegen generate --seed S`` and a shared link all show the same faces.

Load: the model is loaded once. Rendering runs off the event loop in two lanes (:mod:`.lanes`): single
faces on one worker thread, grids, walks and projections on another, so a cheap face never waits
behind an expensive walk. Every request's cost is estimated and bounded before any work (at most
MAX_PIXELS pixels; a projection's steps), and each lane admits work only while what it holds fits its
budget, in total and per client: past it the answer is a 503 with Retry-After. Identical requests in
flight share one render, rendered images sit in a byte-bounded LRU cache, and every image carries an
ETag (model hash + parameters), so a revalidating browser gets a 304 without a render.

Every response carries the security headers and only Hosts naming this machine are answered
(:mod:`.guard`); no response names a path of the server's machine.

Layout: this module holds the app (routes, error pages) and serving it; :mod:`.params` validates
requests, :mod:`.renderer` schedules and caches renders in :mod:`.lanes`, :mod:`.pictures` makes the
images, :mod:`.projection` projects uploaded photos and :mod:`.model_card` gathers the facts about the
model.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..directions import DirectionsError
from ..generate import LoadedGenerator
from .guard import CSP, Guard
from .lanes import Costs
from .model_card import describe_editing, describe_model, load_directions
from .params import (
    FPS_RANGE,
    INDEX_MAX,
    MAX_FRAMES,
    MAX_GRID,
    MAX_PAD,
    MAX_PIXELS,
    MAX_SCALE,
    MAX_UPLOAD_BYTES,
    PROJECT_DEFAULT_STEPS,
    PROJECT_STEPS_RANGE,
    SEED_MAX,
    BadRequest,
    Edit,
    FaceId,
    Params,
    PhotoId,
    check_size,
    edit_str,
)
from .projection import Projections
from .renderer import LRUBytes, Renderer

__all__ = ["BackgroundServer", "CSP", "LRUBytes", "bind", "create_app", "describe_model", "serve", "url_of"]


STATIC = Path(__file__).resolve().parent / "static"


class DemoApp(Starlette):
    """Starlette with :class:`.guard.Guard` outermost, so that error pages get the headers too."""

    allowed_hosts: tuple[str, ...] = ()

    def build_middleware_stack(self) -> Any:
        return Guard(super().build_middleware_stack(), self.allowed_hosts)


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


async def _image(
    request: Request,
    renderer: Renderer,
    key: str,
    render: Callable[[], bytes] | tuple[FaceId, float | None, int, Edit],
    media: str,
    filename: str,
    cost_ms: float,
) -> Response:
    """The image ``key``, from ``render()`` or, for a single face (face, truncation, scale, edit), from a shared
    batch."""
    etag = renderer.etag(key)
    headers = {"ETag": etag, "Cache-Control": "no-cache", "Content-Disposition": f'inline; filename="{filename}"'}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    client = _client(request)
    if isinstance(render, tuple):
        face, truncation, scale, edit = render
        body = await renderer.get_face(key, face, truncation, scale, cost_ms=cost_ms, client=client, edit=edit)
    else:
        body = await renderer.get(key, render, cost_ms=cost_ms, client=client)
    return Response(body, media_type=media, headers=headers)


def create_app(
    G: LoadedGenerator,
    *,
    cache_bytes: int = 64 << 20,
    max_pending: int = 32,
    queue_seconds: float = 60.0,
    face_queue_seconds: float = 4.0,
    allowed_hosts: Iterable[str] = (),
    perceptual: bool | None = None,
    face_check: bool = True,
    costs: Costs | None = None,
    directions: str | Path | None = None,
) -> Starlette:
    """The demo app for a loaded generator; ``app.state.renderer`` holds its lanes and cache.

    ``queue_seconds`` / ``face_queue_seconds``: the estimated work the render lane and the face lane
    may hold (one client at most half of it); ``max_pending``: at most this many renders waiting.
    ``allowed_hosts``: Host names answered besides localhost and the address listened on.
    ``perceptual``: the projection's perceptual loss (None: when the Inception weights are installed);
    ``face_check``: refuse photos in which dlib finds no face (when dlib is installed).
    ``directions``: the attribute directions file (default: the model's ``NAME-directions.json``; none
    there or made for other weights: no attribute editing)."""
    dirs, no_dirs = load_directions(G, directions)
    renderer = Renderer(
        G,
        cache_bytes=cache_bytes,
        max_pending=max_pending,
        queue_seconds=queue_seconds,
        face_queue_seconds=face_queue_seconds,
        costs=costs,
        dirs=dirs,
    )
    photos = Projections(G, renderer.heavy, renderer.costs, perceptual=perceptual, face_check=face_check)
    info = describe_model(G)
    info["model_id"] = renderer.model_id
    info["limits"].update(
        max_pixels=MAX_PIXELS,
        max_pad=MAX_PAD,
        fps=list(FPS_RANGE),
        max_request_seconds=renderer.heavy.max_request_ms / 1000,
        project_steps=list(PROJECT_STEPS_RANGE),
        project_default_steps=PROJECT_DEFAULT_STEPS,
        max_upload_bytes=MAX_UPLOAD_BYTES,
    )
    info["projection"] = {
        "perceptual": photos.perceptual,
        "candidates": photos.candidates,
        "max_steps": photos.max_steps(),  # what one request's time budget allows on this machine
    }
    editing = describe_editing(dirs, no_dirs)
    info["editing"] = editing
    offered = dirs.attributes if dirs is not None else None
    not_offered = dict((dirs.info.get("not_offered") or {}) if dirs is not None else {})
    R = G.resolution
    costs_ = renderer.costs

    def edit_of(p: Params, name: str = "edit") -> tuple[Edit, str]:
        """The edit in parameter ``name``, checked before any work: names, amounts and, as the renderer
        will compute it, the latent step (a set of nearly parallel directions is refused); and its key."""
        edit = p.edit(name, offered, unavailable=no_dirs, not_offered=not_offered)
        if not edit:
            return edit, ""
        assert dirs is not None
        try:
            dirs.vector(dict(edit))  # microseconds, and cached: the render reuses it
        except DirectionsError as e:
            # the only error left after the checks above: nearly parallel directions (the demo keeps nothing fixed)
            raise BadRequest(f"{name}: " + str(e).replace("cannot edit and keep", "cannot edit", 1)) from None
        return edit, f"{edit_str(edit)}@{renderer.dirs_id}"

    def within_budget(cost_ms: float, lower: str) -> float:
        if cost_ms > renderer.heavy.max_request_ms:
            raise BadRequest(
                f"this request would take about {cost_ms / 1000:.0f} s of this server's time; the limit per "
                f"request is {renderer.heavy.max_request_ms / 1000:.0f} s (lower {lower})"
            )
        return cost_ms

    async def index(request: Request) -> Response:
        return FileResponse(
            STATIC / "index.html",
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
        )

    async def model(request: Request) -> Response:
        Params(request, set())
        return JSONResponse(info, headers={"Cache-Control": "no-cache"})

    async def attributes(request: Request) -> Response:
        Params(request, set())
        return JSONResponse(editing, headers={"Cache-Control": "no-cache"})

    async def grid(request: Request) -> Response:
        p = Params(request, {"seed", "n", "truncation", "cols", "pad", "scale"})
        seed, n = p.int("seed", None, 0, SEED_MAX), p.int("n", 16, 1, MAX_GRID)
        t = p.truncation()
        cols = p.int("cols", max(1, math.ceil(math.sqrt(n))), 1, MAX_GRID)
        pad, scale = p.int("pad", 2, 0, MAX_PAD), p.int("scale", 1, 1, MAX_SCALE)
        rows = math.ceil(n / cols)
        h, w = rows * (R + pad) * scale + pad * scale, cols * (R + pad) * scale + pad * scale
        check_size(h, w, "the grid", lower="scale, n or cols")
        cost = within_budget(costs_.image(n, h * w), "scale or n")
        key = f"grid|{seed}|{n}|{t}|{cols}|{pad}|{scale}"
        return await _image(
            request,
            renderer,
            key,
            lambda: renderer.grid(seed, n, t, cols, pad, scale),
            "image/png",
            f"faces-seed{seed}.png",
            cost,
        )

    async def face(request: Request) -> Response:
        p = Params(request, {"seed", "index", "truncation", "scale", "edit"})
        f = FaceId(p.int("seed", None, 0, SEED_MAX), p.int("index", 0, 0, INDEX_MAX))
        t, scale = p.truncation(), p.int("scale", 1, 1, MAX_SCALE)
        edit, ekey = edit_of(p)
        check_size(R * scale, R * scale, "the face", lower="scale")
        key = f"face|{f}|{t}|{scale}" + (f"|{ekey}" if edit else "")
        cost = costs_.image(1, (R * scale) ** 2)
        name = f"seed{f.seed}-{f.index:05d}" + ("-edited" if edit else "")
        return await _image(request, renderer, key, (f, t, scale, edit), "image/png", f"{name}.png", cost)

    def end_name(x: FaceId | PhotoId, edit: Edit = ()) -> str:
        return (f"{x.seed}-{x.index}" if isinstance(x, FaceId) else f"photo-{x.id[:6]}") + ("-edited" if edit else "")

    def walk(fmt: str) -> Callable:
        allowed = {"a", "b", "edit_a", "edit_b", "frames", "truncation", "scale"} | ({"fps"} if fmt == "gif" else set())

        async def route(request: Request) -> Response:
            p = Params(request, allowed)
            a, b = p.end("a"), p.end("b")
            (edit_a, key_a), (edit_b, key_b) = edit_of(p, "edit_a"), edit_of(p, "edit_b")
            frames = p.int("frames", 8 if fmt == "png" else 24, 2, MAX_FRAMES)
            t, scale = p.truncation(), p.int("scale", 1, 1, MAX_SCALE)
            fps = p.float("fps", 12.0, *FPS_RANGE) if fmt == "gif" else 0.0
            if fmt == "png":
                h, w, n_out = R * scale + 4 * scale, (frames * (R + 2) + 2) * scale, 1
            else:
                h, w, n_out = R * scale, R * scale, 2 * frames - 2  # there and back
            check_size(h, w, f"the walk {fmt.upper()}", frames=n_out, lower="frames or scale")
            cost = within_budget(costs_.image(frames, n_out * h * w, fmt), "frames or scale")
            ea, eb = (photos.latent(x) if isinstance(x, PhotoId) else x for x in (a, b))
            key = f"walk|{fmt}|{a}|{b}|{frames}|{t}|{scale}|{fps}" + (f"|{key_a}|{key_b}" if edit_a or edit_b else "")
            edits = (edit_a, edit_b)
            return await _image(
                request,
                renderer,
                key,
                lambda: renderer.walk(ea, eb, frames, t, scale, fmt, fps, edits=edits),
                f"image/{fmt}",
                f"walk-{end_name(a, edit_a)}-{end_name(b, edit_b)}.{fmt}",
                cost,
            )

        return route

    async def project(request: Request) -> Response:
        p = Params(request, {"steps"})
        steps = p.int("steps", PROJECT_DEFAULT_STEPS, *PROJECT_STEPS_RANGE)
        job = await photos.submit(request, steps, _client(request))
        return JSONResponse(job.public(), status_code=202, headers={"Cache-Control": "no-store"})

    async def projection(request: Request) -> Response:
        p = Params(request, {"id"})
        job = photos.get(p.photo("id"))
        return JSONResponse(job.public(), headers={"Cache-Control": "no-store"})

    async def projection_png(request: Request) -> Response:
        p = Params(request, {"id", "scale", "edit"})
        pid, scale = p.photo("id"), p.int("scale", 1, 1, MAX_SCALE)
        edit, ekey = edit_of(p)
        job = photos.get(pid)
        latent = photos.latent(pid)  # 409 unless done
        assert job.png is not None
        key = f"projection|{pid.id}|{scale}" + (f"|{ekey}" if edit else "")
        if scale == 1 and not edit:
            body = job.png
        else:
            cost = costs_.image(1, (R * scale) ** 2)
            body = await renderer.get(key, lambda: renderer.latent_png(latent, scale, edit), cost, _client(request))
        name = f"photo-{pid.id[:6]}" + ("-edited" if edit else "")
        return Response(
            body,
            media_type="image/png",
            headers={"Cache-Control": "no-store", "Content-Disposition": f'inline; filename="{name}.png"'},
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            status = exc.status_code
            msg = {
                404: f"no such page: {request.url.path}",
                405: f"method {request.method} is not allowed for {request.url.path}; use "
                + ("POST" if request.url.path == "/api/project" else "GET"),
            }.get(status, exc.detail)
            if status == 404 and exc.detail and str(exc.detail).startswith("no projection"):
                msg = exc.detail
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
        Route("/api/attributes", attributes),
        Route("/api/grid.png", grid),
        Route("/api/face.png", face),
        Route("/api/walk.png", walk("png")),
        Route("/api/walk.gif", walk("gif")),
        Route("/api/project", project, methods=["POST"]),
        Route("/api/projection", projection),
        Route("/api/projection.png", projection_png),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = DemoApp(
        routes=routes, exception_handlers={HTTPException: http_error, Exception: http_error}, lifespan=lifespan
    )
    app.allowed_hosts = tuple(allowed_hosts)
    app.state.renderer = renderer
    app.state.photos = photos
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
