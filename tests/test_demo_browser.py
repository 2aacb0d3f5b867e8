"""The demo page in a real headless Chromium: load, "new faces", the truncation slider, two clicked faces,
a shared link, and a screenshot.

Chromium is driven through chromedriver's W3C WebDriver HTTP API with the standard library (no
selenium/playwright dependency). Skips where Debian's ``chromium`` and ``chromedriver`` are not installed
(``scripts/install_browser.sh`` installs them).

Retake the README screenshot with a trained model (generated faces only):

    FAKEFACEGEN_DEMO_MODEL=runs/00001-bundled64 FAKEFACEGEN_DEMO_SCREENSHOT=docs/demo.png \\
        python -m pytest tests/test_demo_browser.py -k screenshot
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the demo extra is not installed (pip install 'fakefacegen[demo]')")
pytest.importorskip("uvicorn", reason="the demo extra is not installed (pip install 'fakefacegen[demo]')")

from fakefacegen.demo.server import BackgroundServer, create_app  # noqa: E402
from fakefacegen.generate import load_generator  # noqa: E402
from fakefacegen.images import make_grid  # noqa: E402
from test_demo import make_tiny_model  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="no headless Chromium + chromedriver (Debian: apt-get install chromium chromium-driver, "
        "or scripts/install_browser.sh)",
    ),
]

# The network is closed here: nothing may try to reach the internet, and no profile is reused.
CHROME_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--window-size=1060,720",
]
SHOT_SIZE = (1000, 720)
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """Just enough of the W3C WebDriver protocol: open a page, run script, click, drag, screenshot."""

    def __init__(self, timeout: float = 60.0):
        self.profile = tempfile.mkdtemp(prefix="fakefacegen-chromium-")
        port = _free_port()
        self.driver = subprocess.Popen(
            [CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{port}"
        self.sid = None
        t0 = time.monotonic()
        while True:
            try:
                if self._call("GET", "/status")["value"].get("ready"):
                    break
            except OSError:
                pass
            if time.monotonic() - t0 > timeout or self.driver.poll() is not None:
                self.close()
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.1)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "goog:loggingPrefs": {"browser": "ALL"},
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": CHROME_ARGS + [f"--user-data-dir={self.profile}"],
                    },
                }
            }
        }
        try:
            self.sid = self._call("POST", "/session", caps)["value"]["sessionId"]
        except Exception:
            self.close()
            raise

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            v = json.loads(e.read() or b"{}").get("value", {})
            raise AssertionError(
                f"webdriver {method} {path}: {v.get('error')}: {str(v.get('message', ''))[:300]}"
            ) from None

    def s(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.sid}{path}", body)["value"]

    def open(self, url: str) -> None:
        self.s("POST", "/url", {"url": url})

    def js(self, script: str, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css: str) -> dict:
        return self.s("POST", "/element", {"using": "css selector", "value": css})

    def click(self, css: str) -> None:
        self.s("POST", f"/element/{self.find(css)[ELEMENT]}/click", {})

    def click_at(self, css: str, dx: int) -> None:
        """Press and release the mouse ``dx`` px right of the element's centre: a real pointer gesture."""
        el = self.find(css)
        self.pointer(
            {"type": "pointerMove", "origin": el, "x": dx, "y": 0},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerUp", "button": 0},
        )

    def move_to(self, x: int, y: int) -> None:
        self.pointer({"type": "pointerMove", "origin": "viewport", "x": x, "y": y})

    def pointer(self, *actions: dict) -> None:
        """Perform mouse ``actions`` (WebDriver pointer actions) in order."""
        mouse = {"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": list(actions)}
        self.s("POST", "/actions", {"actions": [mouse]})

    def wait(self, script: str, *args, timeout: float = 60.0):
        """Poll ``script`` (a JS expression body returning a value) until it is truthy; returns it."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            v = self.js(script, *args)
            if v:
                return v
            time.sleep(0.05)
        page_error = self.js("return document.getElementById('error').textContent")
        raise AssertionError(f"timed out after {timeout}s waiting for: {script}; page error: {page_error!r}")

    def viewport(self, width: int, height: int) -> None:
        """Make the page's viewport exactly width x height CSS pixels (the window size includes browser UI)."""
        self.s(
            "POST",
            "/goog/cdp/execute",
            {
                "cmd": "Emulation.setDeviceMetricsOverride",
                "params": {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            },
        )

    def screenshot(self) -> bytes:
        return base64.b64decode(self.s("GET", "/screenshot"))

    def console_errors(self) -> list[str]:
        logs = self._call("POST", f"/session/{self.sid}/se/log", {"type": "browser"})["value"]
        return [e["message"] for e in logs if e.get("level") == "SEVERE"]

    def close(self) -> None:
        if self.sid:
            try:
                self._call("DELETE", f"/session/{self.sid}")
            except Exception:
                pass
        self.driver.terminate()
        try:
            self.driver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.driver.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="module")
def G(tmp_path_factory):
    return load_generator(
        make_tiny_model(tmp_path_factory.mktemp("browser") / "tiny32.safetensors", meta={"images_seen": 50_000})
    )


@pytest.fixture(scope="module")
def server(G):
    with BackgroundServer(create_app(G)) as s:
        yield s


GRID_KEY = "return document.body.dataset.grid || null"
# Face 0's pixels as drawn on its canvas (RGB rows), to compare with what the generator makes.
FACE_PIXELS = """const c = document.querySelectorAll('#grid canvas')[arguments[0]];
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
const rgb = []; for (let i = 0; i < d.length; i += 4) rgb.push(d[i], d[i + 1], d[i + 2]);
return [c.width, rgb];"""


def face_on_page(browser: Browser, i: int = 0) -> np.ndarray:
    w, rgb = browser.js(FACE_PIXELS, i)
    return np.array(rgb, dtype=np.uint8).reshape(w, w, 3)


def url_params(browser: Browser) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlparse(browser.js("return location.href")).query))


def test_page_shows_the_seeds_faces_and_reacts_to_new_faces_slider_and_clicks(browser, server, G, tmp_path):
    browser.open(server.url + "/?seed=7")
    assert browser.wait(GRID_KEY) == "7|16|null"
    assert browser.js("return document.querySelectorAll('#grid canvas').length") == 16
    np.testing.assert_array_equal(face_on_page(browser, 0), G.sample(1, 7)[0])
    np.testing.assert_array_equal(face_on_page(browser, 15), G.sample(16, 7)[15])
    model = browser.wait("const t = document.getElementById('model').textContent; return t.includes('px') ? t : null")
    assert "tiny32" in model and "32×32 px" in model and "50k images seen" in model

    # "New faces": a new seed, in the URL and on the canvases
    browser.click("#new-faces")
    key = browser.wait("const k = document.body.dataset.grid; return k && k !== '7|16|null' ? k : null")
    seed = int(key.split("|")[0])
    assert url_params(browser)["seed"] == str(seed) and key == f"{seed}|16|null"
    np.testing.assert_array_equal(face_on_page(browser, 3), G.sample(4, seed)[3])

    # The slider: a click near its left end turns truncation on at a low value and re-renders
    browser.click_at("#truncation", -60)
    key = browser.wait("const k = document.body.dataset.grid; return k && !k.endsWith('|null') ? k : null")
    t = float(key.split("|")[2])
    assert 0.3 <= t < 0.65 and url_params(browser)["truncation"] == f"{t:.2f}"
    assert browser.js("return document.getElementById('trunc-on').checked") is True
    np.testing.assert_array_equal(face_on_page(browser, 0), G.sample(1, seed, truncation=t)[0])
    assert np.abs(face_on_page(browser, 0).astype(int) - G.sample(1, seed)[0]).mean() > 1

    # Two clicked faces: the walk between them as a strip and an animation
    browser.click('#grid .face[data-index="2"]')
    browser.click('#grid .face[data-index="9"]')
    walk = browser.wait("return document.body.dataset.walk || null")
    assert walk == f"{seed}:2|{seed}:9|{t:.2f}"
    strip_w = browser.js("return document.getElementById('walk-strip').naturalWidth")
    assert strip_w == 8 * (32 + 2) + 2
    assert browser.js("return document.getElementById('walk-anim').naturalWidth") == 32
    assert browser.js("return [...document.querySelectorAll('.face.picked .badge')].map(b => b.textContent)") == [
        "A",
        "B",
    ]

    # The link reproduces the grid
    link = browser.js("return location.href")
    browser.open(server.url + "/?seed=1")
    browser.wait("return document.body.dataset.grid === '1|16|null'")
    browser.open(link)
    assert browser.wait(GRID_KEY) == key
    np.testing.assert_array_equal(face_on_page(browser, 0), G.sample(1, seed, truncation=t)[0])

    shot = browser.screenshot()
    (tmp_path / "demo.png").write_bytes(shot)
    assert Image.open(io.BytesIO(shot)).size[0] == 1060
    assert not browser.console_errors()


def test_bad_link_shows_the_error_and_still_draws_faces(browser, server):
    browser.open(server.url + "/?seed=banana&truncation=7")
    key = browser.wait(GRID_KEY)
    err = browser.js("return document.getElementById('error').textContent")
    assert "seed in the link must be an integer" in err and "truncation in the link must be 0.3..1.0" in err
    assert key.endswith("|16|null")  # a random seed instead, no truncation


def test_grid_download_link_is_the_grid_png(browser, server, G):
    browser.open(server.url + "/?seed=11&n=9")
    browser.wait("return document.body.dataset.grid === '11|9|null'")
    href = browser.js("return document.getElementById('download-grid').href")
    face_href = browser.js("return document.querySelector('#grid .dl').href")
    with urllib.request.urlopen(href) as r:
        np.testing.assert_array_equal(np.asarray(Image.open(r).convert("RGB")), make_grid(G.sample(9, 11)))
    with urllib.request.urlopen(face_href) as r:
        assert np.abs(np.asarray(Image.open(r).convert("RGB")).astype(int) - G.sample(1, 11)[0]).max() <= 1


def test_a_dropped_photo_is_projected_and_walks_to_a_clicked_face(browser, G, tmp_path):
    """Choose a photo in the file input: the page shows progress, then the projection as face A; a click on
    a face of the grid walks from the photo to it."""
    photo = tmp_path / "me.png"
    Image.fromarray(G.sample(1, 77)[0]).save(photo)
    with BackgroundServer(create_app(G, perceptual=False, face_check=False)) as s:
        browser.open(s.url + "/?seed=5")
        browser.wait("return document.body.dataset.grid === '5|16|null'")
        privacy = browser.js("return document.querySelector('.privacy').textContent")
        assert "in memory" in privacy and "never writes it to disk" in privacy
        el = browser.find("#photo-file")[ELEMENT]
        browser.s("POST", f"/element/{el}/value", {"text": str(photo)})
        pid = browser.wait("return document.body.dataset.photo || null")
        job = browser.js("return window.fakefacegen.photo")
        assert job["id"] == pid and job["state"] == "done" and job["step"] == job["steps"] == 40
        assert (
            browser.wait("const i = document.getElementById('photo-proj'); return i.complete && i.naturalWidth") == 32
        )
        status = browser.js("return document.getElementById('photo-status').textContent")
        assert "Projected in" in status and "pick a face in the grid" in status
        assert browser.js("return document.getElementById('a-label').textContent") == "your photo (projected)"
        browser.click('#grid .face[data-index="3"]')
        walk = browser.wait("const w = document.body.dataset.walk; return w && w.includes('5:3') ? w : null")
        assert walk == f"photo:{pid}|5:3|null"
        assert browser.js("return document.getElementById('walk-strip').naturalWidth") == 8 * (32 + 2) + 2
        assert not browser.console_errors()


def _save_small_png(shot: bytes, path: Path, limit: int = 300_000) -> int:
    """Write the screenshot as a PNG under ``limit`` bytes: full colour if it fits, else a palette of
    256, 128, ... colours (noisy untrained faces compress badly; trained ones rarely need this)."""
    im = Image.open(io.BytesIO(shot)).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    colors = 256
    while buf.tell() > limit and colors >= 16:
        buf = io.BytesIO()
        im.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buf, format="PNG", optimize=True
        )
        colors //= 2
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.tell()


def test_screenshot_and_time_to_first_grid(browser, tmp_path):
    """A screenshot of the page with two faces picked, and the time from navigation to a drawn grid.

    FAKEFACEGEN_DEMO_MODEL picks the model (default: a tiny random 32 px one), FAKEFACEGEN_DEMO_SCREENSHOT
    where the PNG goes (default: the test's temporary directory)."""
    src = os.environ.get("FAKEFACEGEN_DEMO_MODEL") or make_tiny_model(tmp_path / "tiny32.safetensors")
    out = Path(os.environ.get("FAKEFACEGEN_DEMO_SCREENSHOT") or tmp_path / "demo.png")
    G = load_generator(src)
    b = browser
    b.viewport(*SHOT_SIZE)
    try:
        with BackgroundServer(create_app(G)) as s:
            # No truncation: with this BatchNorm DCGAN, t <= 1 pulls faces to a blurry, sepia average face.
            b.open(s.url + "/?seed=2024")
            b.wait("return document.body.dataset.grid === '2024|16|null'")
            ms = b.js("return window.fakefacegen.gridReadyMs")
            b.click('#grid .face[data-index="1"]')
            b.click('#grid .face[data-index="6"]')
            b.wait("return document.body.dataset.walk || null")
            b.wait(
                "return document.getElementById('end-b').complete && document.getElementById('end-b').naturalWidth > 0"
            )
            b.js("document.activeElement.blur()")
            b.move_to(SHOT_SIZE[0] - 5, 5)  # park the mouse off the faces: no hover overlay in the picture
            time.sleep(0.4)  # let the overlay's fade-out finish
            size = _save_small_png(b.screenshot(), out)
    finally:
        b.s("POST", "/goog/cdp/execute", {"cmd": "Emulation.clearDeviceMetricsOverride", "params": {}})
    print(f"\n{src}: grid of 16 drawn {ms:.0f} ms after navigation; screenshot {out} ({size / 1000:.0f} kB)")
    assert 0 < ms < 60_000 and size < 300_000
    assert Image.open(out).size == SHOT_SIZE
