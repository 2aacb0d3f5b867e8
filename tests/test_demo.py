"""``fakefacegen demo``: every route over real HTTP (uvicorn in a thread, stdlib urllib as the client),
bad input, 50 concurrent requests, bounded memory, and the command line."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the demo extra is not installed (pip install 'fakefacegen[demo]')")
pytest.importorskip("uvicorn", reason="the demo extra is not installed (pip install 'fakefacegen[demo]')")

from fakefacegen.checkpoint import save_generator  # noqa: E402
from fakefacegen.config import ModelConfig  # noqa: E402
from fakefacegen.demo.server import BackgroundServer, LRUBytes, create_app, describe_model  # noqa: E402
from fakefacegen.generate import LoadedGenerator, load_generator  # noqa: E402
from fakefacegen.images import make_grid  # noqa: E402
from fakefacegen.models import DCGANGenerator, recalibrate_batchnorm  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "src" / "fakefacegen" / "demo" / "static"


def make_tiny_model(path: Path, seed: int = 0, meta: dict | None = None, resolution: int = 32) -> Path:
    """A random-init generator file (what the demo loads), small enough to render in milliseconds."""
    import torch

    torch.manual_seed(seed)
    mc = ModelConfig(resolution=resolution, width=8, z_dim=16)
    g = DCGANGenerator(mc)
    # eval-mode images with BatchNorm statistics of these weights (not 0/1): varied, not flat
    recalibrate_batchnorm(g, batches=2, batch_size=32)
    save_generator(g.state_dict(), dataclasses.asdict(mc), path, meta=meta)
    return path


def get(url: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
    """(status, lower-cased headers, body) without raising on 4xx/5xx."""
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def png(body: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(body))
    assert im.format == "PNG"
    return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("demo_model")
    p = make_tiny_model(d / "tiny32.safetensors", meta={"images_seen": 123456, "step": 789})
    (d / "tiny32.md").write_text("# tiny32\n\nA test model.\n\n| metric | value |\n|---|---|\n| FID (5k) | 42.5 |\n")
    return p


@pytest.fixture(scope="module")
def G(model_file) -> LoadedGenerator:
    return load_generator(model_file)


@pytest.fixture(scope="module")
def server(G):
    with BackgroundServer(create_app(G)) as s:
        yield s


# --------------------------------------------------------------------------------------------
# The page and its files


def test_page_and_static_files_are_served_by_the_package(server):
    status, h, body = get(server.url + "/")
    assert status == 200 and h["content-type"].startswith("text/html")
    html = body.decode()
    assert 'src="/static/app.js"' in html and 'href="/static/style.css"' in html
    # The CSP forbids every origin but this server, so the page provably needs no internet.
    assert "default-src 'self'" in h["content-security-policy"]
    for name, ctype in (("app.js", "javascript"), ("style.css", "text/css")):
        status, h, body = get(f"{server.url}/static/{name}")
        assert status == 200 and ctype in h["content-type"]
        assert body == (STATIC / name).read_bytes()
    # The same query (the seed in a shared link) gets the same page.
    assert get(server.url + "/?seed=42&truncation=0.70")[0] == 200


def test_no_asset_comes_from_elsewhere():
    for f in STATIC.iterdir():
        text = f.read_text()
        # Any absolute URL or protocol-relative reference (a CDN script, a web font) would need internet.
        refs = re.findall(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}""", text, flags=re.I)
        assert not refs, f"{f.name} references {refs}"
        assert "@import" not in text and "@font-face" not in text


# --------------------------------------------------------------------------------------------
# Model facts


def test_model_route_reports_name_resolution_images_seen_and_fid_from_the_card(server):
    status, h, body = get(server.url + "/api/model")
    assert status == 200 and h["content-type"] == "application/json"
    m = json.loads(body)
    assert m["name"] == "tiny32" and m["resolution"] == 32 and m["z_dim"] == 16
    assert m["images_seen"] == 123456 and m["step"] == 789
    assert m["fid"] == 42.5 and m["fid_source"] == "tiny32.md"
    assert m["limits"]["max_grid"] == 64 and m["limits"]["truncation"] == [0.3, 1.0]


def test_fid_comes_from_the_run_log_for_the_loaded_checkpoint(tmp_path, G):
    run = tmp_path / "00007-celeba64"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    recs = [
        {"kind": "train", "step": 100, "loss_d": 1.0},
        {"kind": "eval", "step": 1000, "images_seen": 64000, "fid": 80.25, "n": 2000},
        {"kind": "eval", "step": 2000, "images_seen": 128000, "fid": 61.5, "n": 2000},
        {"kind": "eval", "step": 3000, "images_seen": 192000, "fid": 55.0, "n": 2000},
    ]
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + '\n{"kind": "ev')  # torn last line
    loaded = LoadedGenerator(
        G.net, str(run / "checkpoints" / "ckpt-00002500.pt"), {"step": 2500, "images_seen": 160000, "ema": True}
    )
    info = describe_model(loaded)
    assert info["name"] == "00007-celeba64" and info["images_seen"] == 160000
    # the checkpoint is at step 2500: the FID logged at step 2000 describes it, the one at 3000 does not
    assert info["fid"] == 61.5 and info["fid_step"] == 2000 and info["fid_n"] == 2000
    assert "log.jsonl" in info["fid_source"]
    # no eval in the log: FID unknown, not invented
    (run / "log.jsonl").write_text(json.dumps(recs[0]) + "\n")
    assert describe_model(loaded)["fid"] is None


# --------------------------------------------------------------------------------------------
# Images


def test_grid_is_the_seeds_faces_and_deterministic(server, G):
    status, h, body = get(server.url + "/api/grid.png?seed=5")
    assert status == 200 and h["content-type"] == "image/png"
    grid = png(body)
    assert grid.shape == (4 * 34 + 2, 4 * 34 + 2, 3)  # 16 faces of 32 px, 4 columns, 2 px padding
    np.testing.assert_array_equal(grid, make_grid(G.sample(16, 5)))
    assert get(server.url + "/api/grid.png?seed=5")[2] == body  # same seed, same bytes
    other = png(get(server.url + "/api/grid.png?seed=6")[2])
    assert np.abs(other.astype(int) - grid).mean() > 5  # another seed, other faces
    # n, cols, pad, scale
    status, _, body = get(server.url + "/api/grid.png?seed=5&n=6&cols=3&pad=0&scale=2")
    np.testing.assert_array_equal(
        png(body)[:64, :64], np.asarray(Image.fromarray(G.sample(1, 5)[0]).resize((64, 64), Image.Resampling.LANCZOS))
    )
    assert png(body).shape == (2 * 64, 3 * 64, 3)


def test_truncation_changes_the_faces_as_generate_does(server, G):
    plain = png(get(server.url + "/api/grid.png?seed=5")[2])
    t = png(get(server.url + "/api/grid.png?seed=5&truncation=0.5")[2])
    np.testing.assert_array_equal(t, make_grid(G.sample(16, 5, truncation=0.5)))
    assert np.abs(t.astype(int) - plain).mean() > 1
    # 'off' is the same as no truncation
    np.testing.assert_array_equal(png(get(server.url + "/api/grid.png?seed=5&truncation=off")[2]), plain)


def test_face_is_image_index_of_the_seed(server, G):
    status, h, body = get(server.url + "/api/face.png?seed=5&index=7&truncation=0.7")
    assert status == 200 and h["content-type"] == "image/png"
    assert 'filename="seed5-00007.png"' in h["content-disposition"]
    face = png(body)
    assert face.shape == (32, 32, 3)
    # batch 1 on the server vs image 7 of a batch of 16 here: equal up to float rounding
    assert np.abs(face.astype(int) - G.sample(16, 5, truncation=0.7)[7]).max() <= 1
    assert png(get(server.url + "/api/face.png?seed=5&index=7&truncation=0.7&scale=3")[2]).shape == (96, 96, 3)


def test_walk_strip_runs_from_face_a_to_face_b(server, G):
    status, h, body = get(server.url + "/api/walk.png?a=5:7&b=9:0&frames=6")
    assert status == 200 and h["content-type"] == "image/png"
    strip = png(body)
    assert strip.shape == (36, 6 * 34 + 2, 3)
    frames = [strip[2:34, 2 + k * 34 : 34 + k * 34] for k in range(6)]
    a, b = G.sample(8, 5)[7], G.sample(1, 9)[0]
    assert np.abs(frames[0].astype(int) - a).max() <= 1 and np.abs(frames[-1].astype(int) - b).max() <= 1
    mid = frames[3].astype(int)
    assert np.abs(mid - a).mean() > 1 and np.abs(mid - b).mean() > 1
    steps = [np.abs(frames[k + 1].astype(int) - frames[k]).mean() for k in range(5)]
    assert max(steps) < np.abs(b.astype(int) - a).mean()  # each step is smaller than the whole jump


def test_walk_animation_is_a_looping_gif_there_and_back(server, G):
    status, h, body = get(server.url + "/api/walk.gif?a=5:7&b=9:0&frames=6&fps=10")
    assert status == 200 and h["content-type"] == "image/gif"
    im = Image.open(io.BytesIO(body))
    assert im.format == "GIF" and im.n_frames == 2 * 6 - 2 and im.info.get("loop") == 0
    assert im.info["duration"] == 100
    first = np.asarray(im.convert("RGB"))
    assert first.shape == (32, 32, 3)
    assert np.abs(first.astype(int) - G.sample(8, 5)[7]).mean() < 6  # GIF's palette costs a little


@pytest.mark.slow
def test_a_128px_model_serves_128px_faces(tmp_path):
    G128 = load_generator(make_tiny_model(tmp_path / "tiny128.safetensors", resolution=128))
    with BackgroundServer(create_app(G128)) as s:
        assert json.loads(get(s.url + "/api/model")[2])["resolution"] == 128
        assert png(get(s.url + "/api/face.png?seed=3&index=1")[2]).shape == (128, 128, 3)
        grid = png(get(s.url + "/api/grid.png?seed=3&n=4")[2])
        np.testing.assert_array_equal(grid, make_grid(G128.sample(4, 3)))
        assert get(s.url + "/api/grid.png?seed=3&n=64&scale=4")[0] == 400  # 4168 px > the 4096 limit


def test_etag_gives_304_and_changes_with_the_model(server, tmp_path):
    url = server.url + "/api/face.png?seed=1"
    status, h, body = get(url)
    etag = h["etag"]
    status, h2, body2 = get(url, headers={"If-None-Match": etag})
    assert status == 304 and body2 == b"" and h2["etag"] == etag
    other = load_generator(make_tiny_model(tmp_path / "other.safetensors", seed=1))
    with BackgroundServer(create_app(other)) as s2:
        status, h3, body3 = get(s2.url + "/api/face.png?seed=1", headers={"If-None-Match": etag})
        assert status == 200 and h3["etag"] != etag and body3 != body


# --------------------------------------------------------------------------------------------
# Bad input


BAD = [
    ("/api/grid.png?seed=abc", 400, "seed must be an integer"),
    ("/api/grid.png?seed=-1", 400, "seed must be an integer 0..4294967295"),
    ("/api/grid.png?seed=4294967296", 400, "seed"),
    ("/api/grid.png?seed=" + "9" * 200, 400, "seed"),
    ("/api/grid.png", 400, "missing parameter 'seed'"),
    ("/api/grid.png?seed=1&n=65", 400, "n must be an integer 1..64"),
    ("/api/grid.png?seed=1&n=0", 400, "n must be"),
    ("/api/grid.png?seed=1&truncation=0.2", 400, "truncation must be a number 0.3..1"),
    ("/api/grid.png?seed=1&truncation=1.5", 400, "truncation"),
    ("/api/grid.png?seed=1&truncation=nan", 400, "truncation"),
    ("/api/grid.png?seed=1&truncation=abc", 400, "truncation"),
    ("/api/grid.png?seed=1&n=64&cols=64&scale=8", 400, "limit is 4096"),
    ("/api/grid.png?seed=1&color=red", 400, "unknown parameter 'color'"),
    ("/api/grid.png?seed=1&seed=2", 400, "more than once"),
    ("/api/face.png?seed=1&index=-3", 400, "index must be"),
    ("/api/face.png?seed=1&scale=9", 400, "scale must be an integer 1..8"),
    ("/api/walk.png?a=1:0", 400, "missing parameter 'b'"),
    ("/api/walk.png?a=1&b=2:0", 400, "a must be a face as SEED:INDEX"),
    ("/api/walk.png?a=1:0&b=2:0&frames=1", 400, "frames must be an integer 2..64"),
    ("/api/walk.png?a=1:0&b=2:0&fps=5", 400, "unknown parameter 'fps'"),
    ("/api/walk.gif?a=1:0&b=2:0&fps=0", 400, "fps must be a number 1..60"),
    ("/api/model?x=1", 400, "unknown parameter 'x'"),
    ("/api/nothing", 404, "no such page: /api/nothing"),
    ("/static/missing.js", 404, "no such page"),
    ("/static/../server.py", 404, "no such page"),
]


@pytest.mark.parametrize("path,status,message", BAD, ids=[b[0][:60] for b in BAD])
def test_bad_requests_get_a_one_line_json_error(server, path, status, message):
    got, h, body = get(server.url + path)
    assert got == status
    assert h["content-type"] == "application/json"
    err = json.loads(body)["error"]
    assert message in err and "\n" not in err and "Traceback" not in err


def test_wrong_method_and_the_server_keeps_serving(server):
    status, h, body = get(server.url + "/api/grid.png?seed=1", method="POST")
    assert status == 405 and "use GET" in json.loads(body)["error"]
    # after every bad request above, the server still answers
    assert get(server.url + "/api/grid.png?seed=1&n=4")[0] == 200


def test_a_failing_render_is_a_json_500_and_the_server_recovers(G, monkeypatch):
    app = create_app(G)
    with BackgroundServer(app) as s:

        def boom(*a, **k):
            raise RuntimeError("simulated failure\nwith a second line")

        monkeypatch.setattr(app.state.renderer, "faces", boom)
        status, h, body = get(s.url + "/api/face.png?seed=3")
        assert status == 500 and json.loads(body) == {
            "error": "internal error while serving /api/face.png: RuntimeError"
        }
        monkeypatch.undo()
        assert get(s.url + "/api/face.png?seed=3")[0] == 200  # not a cached failure


# --------------------------------------------------------------------------------------------
# Load


@pytest.mark.slow
def test_50_concurrent_requests_all_answer_correctly_with_bounded_memory(G):
    cache_bytes = 60_000  # a few dozen small PNGs: forces evictions during the burst
    app = create_app(G, cache_bytes=cache_bytes)
    reqs = (
        [f"/api/face.png?seed={s}&index={s % 5}" for s in range(20)]
        + ["/api/grid.png?seed=77"] * 10
        + [f"/api/grid.png?seed={s}&n=9&truncation=0.6" for s in range(10)]
        + [f"/api/walk.png?a={s}:0&b={s + 1}:2&frames=4" for s in range(10)]
    )
    assert len(reqs) == 50
    barrier = threading.Barrier(50)
    with BackgroundServer(app) as s:

        def one(path):
            barrier.wait(timeout=30)
            t0 = time.perf_counter()
            return path, *get(s.url + path), time.perf_counter() - t0

        with ThreadPoolExecutor(50) as ex:
            results = list(ex.map(one, reqs))
        renderer = app.state.renderer
        assert not renderer.inflight
        assert renderer.cache.nbytes <= cache_bytes
        assert get(s.url + "/api/model")[0] == 200
    for path, status, _h, body, _ in results:
        assert status == 200, (path, body[:200])
        img = png(body)
        q = dict(p.split("=") for p in path.split("?")[1].split("&"))
        if path.startswith("/api/face"):
            expect = G.sample(int(q["index"]) + 1, int(q["seed"]))[-1]
        elif path.startswith("/api/grid"):
            expect = make_grid(
                G.sample(
                    int(q.get("n", 16)),
                    int(q["seed"]),
                    truncation=float(q["truncation"]) if "truncation" in q else None,
                )
            )
        else:
            sa, ia = map(int, q["a"].split(":"))
            expect = G.sample(ia + 1, sa)[-1]
            img = img[2:34, 2:34]  # the strip's first frame is face a
        assert img.shape == expect.shape and np.abs(img.astype(int) - expect).max() <= 1, path
    # the 10 identical grid requests were answered with identical bytes
    assert len({body for path, _, _, body, _ in results if path == "/api/grid.png?seed=77"}) == 1


def test_identical_concurrent_requests_share_one_render(G):
    app = create_app(G)
    barrier = threading.Barrier(20)
    with BackgroundServer(app) as s:

        def one(_):
            barrier.wait(timeout=30)
            return get(s.url + "/api/grid.png?seed=123&n=64&scale=2")

        with ThreadPoolExecutor(20) as ex:
            results = list(ex.map(one, range(20)))
    assert all(r[0] == 200 for r in results) and len({r[2] for r in results}) == 1
    assert app.state.renderer.renders == 1


@pytest.mark.slow
def test_concurrent_single_faces_share_forward_passes(G, monkeypatch):
    app = create_app(G)
    renderer = app.state.renderer
    real, sizes = renderer.faces, []

    def slow_faces(items):
        sizes.append(len(items))
        time.sleep(0.3)  # a slow generator: requests pile up while it works
        return real(items)

    monkeypatch.setattr(renderer, "faces", slow_faces)
    barrier = threading.Barrier(16)
    with BackgroundServer(app) as s:

        def one(i):
            barrier.wait(timeout=30)
            return get(f"{s.url}/api/face.png?seed=40&index={i}" + ("&truncation=0.5" if i % 2 else ""))

        with ThreadPoolExecutor(16) as ex:
            results = list(ex.map(one, range(16)))
    assert sum(sizes) == 16 and len(sizes) <= 4, sizes  # 16 faces in a few forward passes
    plain, trunc = G.sample(16, 40), G.sample(16, 40, truncation=0.5)
    for i, (status, _, body) in enumerate(results):
        assert status == 200
        assert np.abs(png(body).astype(int) - (trunc if i % 2 else plain)[i]).max() <= 1


@pytest.mark.slow
def test_too_many_waiting_renders_get_503_and_the_server_recovers(G):
    app = create_app(G, max_pending=2)
    barrier = threading.Barrier(24)
    with BackgroundServer(app) as s:

        def one(seed):
            barrier.wait(timeout=30)
            return get(f"{s.url}/api/grid.png?seed={seed}&n=64&scale=4")

        with ThreadPoolExecutor(24) as ex:
            results = list(ex.map(one, range(24)))
        busy = [r for r in results if r[0] == 503]
        assert busy, "24 distinct renders with room for 2 should turn some away"
        assert all(r[0] in (200, 503) for r in results)
        assert all(r[1]["retry-after"] == "1" and "server busy" in json.loads(r[2])["error"] for r in busy)
        assert get(s.url + "/api/grid.png?seed=1000&n=4")[0] == 200


def test_lru_cache_is_bounded_by_bytes_and_items():
    c = LRUBytes(max_bytes=100, max_items=3)
    for k in "abcd":
        c.put(k, b"x" * 30)
    assert len(c) == 3 and c.get("a") is None and c.get("d") is not None  # count bound, oldest out
    c.get("b")  # b is now the most recently used
    c.put("e", b"y" * 60)
    assert c.nbytes <= 100 and c.get("b") is not None and c.get("c") is None
    c.put("huge", b"z" * 1000)  # larger than the cache: not kept, nothing else lost
    assert c.get("huge") is None and c.get("b") is not None


# --------------------------------------------------------------------------------------------
# Command line


def _args(**kw) -> argparse.Namespace:
    base = dict(
        model=None,
        host="127.0.0.1",
        port=0,
        which="latest",
        device="cpu",
        cache_mb=64,
        log=False,
        threads=None,
        allow_host=[],
    )
    return argparse.Namespace(**{**base, **kw})


def test_busy_port_and_missing_model_are_one_line_errors(model_file, tmp_path):
    from fakefacegen.checkpoint import CheckpointError
    from fakefacegen.commands.demo import run

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"--port {port}: cannot listen there"):
            run(_args(model=str(model_file), port=port))
    with pytest.raises(CheckpointError, match="no such"):
        run(_args(model=str(tmp_path / "nope.safetensors")))
    from fakefacegen.demo import DemoError

    with pytest.raises(DemoError, match="--port must be 0..65535"):
        run(_args(model=str(model_file), port=70000))
    with pytest.raises(DemoError, match="--threads must be >= 1"):
        run(_args(model=str(model_file), threads=0))


def test_missing_web_stack_names_the_extra(monkeypatch, model_file):
    from fakefacegen.commands.demo import run
    from fakefacegen.demo import DemoError

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ImportError
    with pytest.raises(DemoError, match=r"pip install 'fakefacegen\[demo\]'"):
        run(_args(model=str(model_file)))


def test_demo_is_a_fakefacegen_subcommand():
    """Needs "fakefacegen.commands.demo" in cli.COMMANDS."""
    from fakefacegen import cli
    from fakefacegen.commands.demo import run

    a = cli._parser().parse_args(["demo", "runs/x", "--port", "8080", "--host", "0.0.0.0"])
    assert a.func is run and a.model == "runs/x" and a.port == 8080 and a.host == "0.0.0.0"
    a = cli._parser().parse_args(["demo"])
    assert a.model is None and a.host == "127.0.0.1" and a.port == 7860


@pytest.mark.slow
def test_demo_command_serves_until_interrupted(model_file):
    """`fakefacegen demo MODEL --port 0` prints its address, serves the page, and stops on Ctrl+C.
    Needs "fakefacegen.commands.demo" in cli.COMMANDS."""
    import signal

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(
        [sys.executable, "-m", "fakefacegen", "demo", str(model_file), "--port", "0", "--allow-host", "mybox.lan"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url = None
        t0 = time.monotonic()
        while url is None and time.monotonic() - t0 < 60:
            line = p.stdout.readline()
            if not line:
                break
            m = re.search(r"(http://127\.0\.0\.1:\d+)", line)
            url = m.group(1) if m else None
        if url is None:
            p.kill()
            pytest.fail(f"no address printed; stderr: {p.communicate(timeout=10)[1][-2000:]}")
        status, _, body = get(url + "/api/model")
        assert status == 200 and json.loads(body)["name"] == "tiny32"
        assert get(url + "/api/grid.png?seed=1&n=4")[0] == 200
        assert get(url + "/api/model", headers={"Host": "mybox.lan:1234"})[0] == 200  # --allow-host
        assert get(url + "/api/model", headers={"Host": "rebound.example"})[0] == 421
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=20) in (0, 130)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
