"""The demo's limits: per-request cost checked before any work, the render lane's budget (503 +
Retry-After when full, per client), single faces served while expensive renders run, the Host check
against DNS rebinding, the security headers on every response, and no machine paths in any answer."""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("starlette", reason="the demo extra is not installed (pip install 'fakefacegen[demo]')")
pytest.importorskip("uvicorn", reason="the demo extra is not installed (pip install 'fakefacegen[demo]')")

from fakefacegen.demo.guard import host_name  # noqa: E402
from fakefacegen.demo.lanes import Busy, Costs, Lane  # noqa: E402
from fakefacegen.demo.server import BackgroundServer, create_app  # noqa: E402
from fakefacegen.generate import load_generator  # noqa: E402
from test_demo import get, make_tiny_model  # noqa: E402

FIXED = Costs(face_ms=1.0, step_ms=1.0)  # deterministic estimates: budgets in the tests do not depend on the CPU


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("limits") / "tiny32.safetensors")


@pytest.fixture(scope="module")
def G(model_file):
    return load_generator(model_file)


@pytest.fixture(scope="module")
def server(G):
    with BackgroundServer(create_app(G, costs=FIXED)) as s:
        yield s


def request(url: str, path: str, host: str | None = None, source: str | None = None) -> tuple[int, dict, bytes]:
    """GET ``path`` with an explicit Host header (None: no Host at all) from ``source`` address."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60, source_address=(source, 0) if source else None)
    try:
        conn.putrequest("GET", path, skip_host=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# The lane's bookkeeping


def test_lane_admits_within_its_budget_and_a_clients_share():
    lane = Lane("render", budget_ms=10_000, client_share=0.5, max_items=3)
    try:
        lane.admit(4000, "a")
        with pytest.raises(Busy) as e:
            lane.admit(2000, "a")  # a would hold 6 s > its 5 s share
        assert e.value.status_code == 503 and "your earlier render requests" in e.value.detail
        lane.admit(4000, "b")  # another client still gets in
        with pytest.raises(Busy) as e:
            lane.admit(3000, "c")  # 11 s > the lane's 10 s
        assert "2 render jobs already waiting (about 8 s of work)" in e.value.detail
        assert e.value.headers == {"Retry-After": "8"}  # the 8 s held, at the measured speed (ratio 1)
        lane.admit(1000, "c")
        with pytest.raises(Busy):
            lane.admit(1, "d")  # max_items
        assert lane.refused == 3
        lane.learn(1000, 3.0)  # work took 3x its estimate: Retry-After grows with it
        assert lane.retry_after() == 13  # ceil(9 s * (0.8 + 0.2 * 3))
        for cost, client in ((4000, "a"), (4000, "b"), (1000, "c")):
            lane.release(cost, client)
        assert lane.pending_ms == 0 and lane.items == 0 and not lane.by_client
    finally:
        lane.close()


# --------------------------------------------------------------------------------------------
# Per-request cost, checked before any work


@pytest.mark.slow
def test_a_request_over_the_pixel_budget_is_a_400_naming_frames_and_scale(tmp_path):
    G64 = load_generator(make_tiny_model(tmp_path / "tiny64.safetensors", resolution=64))
    app = create_app(G64, costs=FIXED)
    with BackgroundServer(app) as s:
        status, _, body = get(s.url + "/api/walk.gif?a=1:0&b=2:0&frames=64&scale=8")
        assert status == 400
        assert json.loads(body)["error"] == (
            "the walk GIF would be 126 frames of 512x512 = 33,030,144 pixels; the limit is 16,777,216 per "
            "request (lower frames or scale)"
        )
        assert app.state.renderer.renders == 0  # refused before anything was rendered
        assert get(s.url + "/api/walk.gif?a=1:0&b=2:0&frames=33&scale=8")[0] == 200  # 64 frames: 16,777,216


def test_a_request_estimated_over_the_time_budget_is_a_400(G):
    slow = Costs(face_ms=1000.0, step_ms=1.0)  # a machine where one face takes a second
    with BackgroundServer(create_app(G, costs=slow)) as s:
        status, _, body = get(s.url + "/api/grid.png?seed=1&n=64")
        assert status == 400
        assert json.loads(body)["error"] == (
            "this request would take about 64 s of this server's time; the limit per request is 30 s (lower scale or n)"
        )
        assert get(s.url + "/api/grid.png?seed=1&n=16")[0] == 200


# --------------------------------------------------------------------------------------------
# The lanes under load


@pytest.mark.slow
def test_a_full_render_lane_answers_503_with_retry_after_and_recovers(G):
    # each walk of 5 frames is estimated at 5 s (1 s a face); the lane holds 12 s, one client 6 s
    costs = Costs(face_ms=1000.0, step_ms=1.0)
    app = create_app(G, costs=costs, queue_seconds=12.0)
    est = costs.image(5, 36 * (5 * 34 + 2))  # 5 faces and the strip's pixels: 5.0015 s
    renderer = app.state.renderer
    gate = threading.Event()
    real = renderer.walk

    def held_walk(*a, **k):
        gate.wait(30)  # an expensive render that lasts until the test lets it finish
        return real(*a, **k)

    renderer.walk = held_walk
    walk = "/api/walk.png?a={}:0&b=9:0&frames=5"
    with BackgroundServer(app, host="127.0.0.1") as s, ThreadPoolExecutor(4) as ex:
        first = ex.submit(get, s.url + walk.format(1))
        t0 = time.monotonic()
        while renderer.heavy.items < 1 and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        # the same client again: its 6 s share holds one 5 s walk
        status, h, body = get(s.url + walk.format(2))
        assert status == 503 and h["retry-after"] == str(math.ceil(est / 1000)) == "6"
        assert json.loads(body)["error"] == (
            "server busy: your earlier render requests are still waiting (about 5 s of work); retry in 6 s"
        )
        # another client (127.0.0.2 is this machine too) still gets its turn: fair shares
        other = ex.submit(request, s.url, walk.format(3), "127.0.0.1", "127.0.0.2")
        while renderer.heavy.items < 2 and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        # now the lane holds 10 s of its 12: a third client is turned away, before any work
        status, h, body = request(s.url, walk.format(4), "127.0.0.1", "127.0.0.3")
        assert status == 503 and h["retry-after"] == str(math.ceil(2 * est / 1000)) == "11"
        assert "server busy: 2 render jobs already waiting (about 10 s of work)" in json.loads(body)["error"]
        # identical requests join the render in flight, whatever the budget
        same = ex.submit(get, s.url + walk.format(1))
        gate.set()
        assert first.result(30)[0] == 200 and other.result(30)[0] == 200 and same.result(30)[0] == 200
        assert first.result()[2] == same.result()[2]
        assert renderer.heavy.items == 0 and renderer.heavy.pending_ms == 0
        assert get(s.url + walk.format(4))[0] == 200  # room again
        assert renderer.heavy.refused == 2


@pytest.mark.slow
def test_a_face_is_served_promptly_while_expensive_renders_run(G):
    app = create_app(G, costs=FIXED)
    renderer = app.state.renderer
    real = renderer.walk

    def expensive_walk(*a, **k):
        time.sleep(2.0)  # a walk GIF at the largest frames and scale takes seconds on a real model
        return real(*a, **k)

    renderer.walk = expensive_walk
    with BackgroundServer(app) as s, ThreadPoolExecutor(4) as ex:
        walks = [ex.submit(get, f"{s.url}/api/walk.gif?a={i}:0&b=9:0&frames=4") for i in range(3)]
        t0 = time.monotonic()
        while renderer.heavy.items < 3 and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        assert renderer.heavy.items == 3  # three expensive renders: 6 s of work on one thread
        latencies = []
        for seed in range(5):
            t1 = time.monotonic()
            status, _, _ = get(f"{s.url}/api/face.png?seed={seed}")
            latencies.append(time.monotonic() - t1)
            assert status == 200
        assert not all(w.done() for w in walks)  # the faces did not wait for the walks
        assert max(latencies) < 1.0, latencies
        assert all(w.result(30)[0] == 200 for w in walks)


def test_the_face_lane_has_its_own_budget(G):
    costs = Costs(face_ms=600.0, step_ms=1.0)  # 600 ms a face; the face lane holds 1 s, one client 0.5 s
    app = create_app(G, costs=costs, face_queue_seconds=1.0)
    with BackgroundServer(app) as s:
        status, h, body = get(s.url + "/api/face.png?seed=1")
        # one face costs more than a client's share of the face lane: a 503 that says why
        assert status == 503 and int(h["retry-after"]) >= 1
        assert "your earlier face requests" in json.loads(body)["error"]


# --------------------------------------------------------------------------------------------
# Host check (DNS rebinding)


@pytest.mark.parametrize(
    "host,status",
    [
        ("localhost", 200),
        ("LOCALHOST:7860", 200),
        ("127.0.0.1:9999", 200),  # another port: an SSH tunnel or port forward
        ("[::1]:7860", 200),
        ("evil.example", 421),
        ("evil.example:7860", 421),
        ("127.0.0.1.evil.example", 421),
        ("localhost.evil.example", 421),
        ("10.0.0.5", 421),  # an address this server does not listen on
        ("", 421),
        (None, 400),  # HTTP/1.1 without a Host: the HTTP parser refuses it before the app sees it
    ],
)
def test_only_hosts_naming_this_machine_are_served(server, host, status):
    got, h, body = request(server.url, "/api/model", host)
    assert got == status
    if status == 421:
        err = json.loads(body)["error"]
        assert "refused" in err and "DNS rebinding" in err and "\n" not in err
        assert h["x-content-type-options"] == "nosniff"


def test_allowed_hosts_and_the_listening_address(G):
    with BackgroundServer(create_app(G, costs=FIXED, allowed_hosts=("mybox.lan",))) as s:
        assert request(s.url, "/api/model", "mybox.lan:7860")[0] == 200
        assert request(s.url, "/api/model", "otherbox.lan")[0] == 421
    with BackgroundServer(create_app(G, costs=FIXED), host="127.0.0.2") as s:  # a --host address is served
        assert request(s.url, "/api/model", "127.0.0.2:80")[0] == 200


def test_host_name_parsing():
    assert host_name("LocalHost:7860") == "localhost"
    assert host_name("[::1]:80") == "::1" and host_name("[::1]") == "::1" and host_name("::1") == "::1"
    assert host_name("127.0.0.1") == "127.0.0.1" and host_name(" a.b:1 ") == "a.b"


# --------------------------------------------------------------------------------------------
# Headers on every response, no machine paths


REQUIRED = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@pytest.mark.slow
def test_every_response_carries_the_security_headers(server, G, monkeypatch):
    face = "/api/face.png?seed=3"
    etag = get(server.url + face)[1]["etag"]
    cases = {
        "/": 200,
        "/static/app.js": 200,
        "/api/model": 200,
        face: 200,
        "/api/grid.png?seed=1&n=4": 200,
        "/api/walk.gif?a=1:0&b=2:0&frames=3": 200,
        "/api/grid.png?seed=x": 400,
        "/api/projection?id=0123456789abcdef": 404,
        "/nothing": 404,
    }
    for path, status in cases.items():
        got, h, _ = get(server.url + path)
        assert got == status, path
        for k, v in REQUIRED.items():
            assert h.get(k) == v, (path, k)
        assert (
            "frame-ancestors 'none'" in h["content-security-policy"]
            and "default-src 'self'" in (h["content-security-policy"])
        )
    assert get(server.url + face, headers={"If-None-Match": etag})[1]["x-frame-options"] == "DENY"  # a 304
    assert get(server.url + "/api/model", method="POST")[1]["x-frame-options"] == "DENY"  # a 405
    assert request(server.url, "/", "evil.example")[1]["x-frame-options"] == "DENY"  # a 421

    app = create_app(G, costs=FIXED)

    def boom(*a, **k):
        raise RuntimeError("/home/someone/secret/path failed")

    monkeypatch.setattr(app.state.renderer, "grid", boom)
    with BackgroundServer(app) as s:
        status, h, body = get(s.url + "/api/grid.png?seed=1")
        assert status == 500 and h["x-frame-options"] == "DENY"  # the 500 page too
        assert json.loads(body) == {"error": "internal error while serving /api/grid.png: RuntimeError"}


def test_no_response_names_a_path_of_the_server(server, model_file):
    status, _, body = get(server.url + "/api/model")
    info = json.loads(body)
    assert info["source"] == "tiny32.safetensors"
    text = body.decode()
    for secret in (str(model_file.parent), str(model_file.parent.parent), "/tmp/", "\\\\"):
        assert secret not in text
    # any string value that looks like a path of this machine
    strings = [v for v in info.values() if isinstance(v, str)]
    assert not [v for v in strings if v.startswith("/") or ":\\" in v], strings
