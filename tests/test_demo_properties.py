"""Hypothesis over the demo's query parameters and photo uploads, against a live server: any input
either works (200/202) or gets a clean 4xx (one-line JSON error naming the bad parameter and its
range), within a time bound per request and a memory bound for the whole run; never a 500."""

from __future__ import annotations

import io
import json
import re
import string
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the demo extra is not installed (pip install 'fakefacegen[demo]')")
pytest.importorskip("uvicorn", reason="the demo extra is not installed (pip install 'fakefacegen[demo]')")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fakefacegen.demo.lanes import Costs  # noqa: E402
from fakefacegen.demo.params import INDEX_MAX, SEED_MAX  # noqa: E402
from fakefacegen.demo.server import BackgroundServer, create_app  # noqa: E402
from fakefacegen.generate import load_generator  # noqa: E402
from test_demo import get, make_tiny_model  # noqa: E402

pytestmark = pytest.mark.slow

SECONDS_PER_REQUEST = 20.0  # the largest allowed render of the 32 px test model takes about 2 s
RSS_GROWTH_MB = 600  # the whole run, cache (64 MB) included
EXAMPLES = {"query": 0, "upload": 0}

# name -> (kind, lo, hi, required)
INT, TRUNC, FPS, FACE, PHOTO = "int", "trunc", "fps", "face", "photo"
ROUTES: dict[str, dict[str, tuple]] = {
    "/api/grid.png": {
        "seed": (INT, 0, SEED_MAX, True),
        "n": (INT, 1, 64, False),
        "truncation": (TRUNC, 0.3, 1.0, False),
        "cols": (INT, 1, 64, False),
        "pad": (INT, 0, 16, False),
        "scale": (INT, 1, 8, False),
    },
    "/api/face.png": {
        "seed": (INT, 0, SEED_MAX, True),
        "index": (INT, 0, INDEX_MAX, False),
        "truncation": (TRUNC, 0.3, 1.0, False),
        "scale": (INT, 1, 8, False),
    },
    "/api/walk.png": {
        "a": (FACE, 0, 0, True),
        "b": (FACE, 0, 0, True),
        "frames": (INT, 2, 64, False),
        "truncation": (TRUNC, 0.3, 1.0, False),
        "scale": (INT, 1, 8, False),
    },
    "/api/walk.gif": {
        "a": (FACE, 0, 0, True),
        "b": (FACE, 0, 0, True),
        "frames": (INT, 2, 64, False),
        "truncation": (TRUNC, 0.3, 1.0, False),
        "scale": (INT, 1, 8, False),
        "fps": (FPS, 1.0, 60.0, False),
    },
    "/api/model": {},
    "/api/projection": {"id": (PHOTO, 0, 0, True)},
    "/api/projection.png": {"id": (PHOTO, 0, 0, True), "scale": (INT, 1, 8, False)},
}
RANGE_TEXT = {INT: "{lo}..{hi}", TRUNC: "0.3..1", FPS: "1..60"}
SMALL = {"scale": 3, "frames": 12, "n": 36, "cols": 64}  # keeps most valid examples quick; larger ones still occur


def valid(kind: str, lo, hi, name: str) -> st.SearchStrategy[str]:
    if kind == INT:
        cap = min(hi, SMALL[name]) if name in SMALL else hi
        return st.one_of(st.integers(lo, cap), st.integers(lo, hi)).map(str)
    if kind == TRUNC:
        return st.one_of(st.sampled_from(["", "off", "none", "OFF"]), st.floats(lo, hi).map(repr))
    if kind == FPS:
        return st.floats(lo, hi).map(repr)
    if kind == FACE:
        return st.builds(lambda s, i: f"{s}:{i}", st.integers(0, SEED_MAX), st.integers(0, 99))
    return st.just("0123456789abcdef")  # a well-formed id of no projection: a 404


WORDS = st.text(string.ascii_letters + "-_. ", min_size=1, max_size=12).filter(
    lambda t: t.strip().lower() not in ("", "off", "none", "nan", "inf", "infinity")
)


def invalid(kind: str, lo, hi) -> st.SearchStrategy[str]:
    if kind == INT:
        return st.one_of(
            st.integers(max_value=lo - 1).map(str),
            st.integers(min_value=hi + 1).map(str),
            st.floats(allow_nan=True).map(repr),
            WORDS,
            st.just(""),
        )
    if kind in (TRUNC, FPS):
        return st.one_of(
            st.floats(max_value=lo, exclude_max=True).map(repr),
            st.floats(min_value=hi, exclude_min=True).map(repr),
            st.sampled_from(["nan", "inf", "-inf", "1e999", "0x1"]),
            WORDS,
        )
    if kind == FACE:
        return st.one_of(
            st.integers(0, SEED_MAX).map(str),  # no index
            st.builds(lambda s, i: f"{s}:{i}", st.integers(min_value=SEED_MAX + 1), st.integers(0, 9)),
            st.builds(lambda s, i: f"{s}:{i}", st.integers(0, 9), st.integers(min_value=INDEX_MAX + 1)),
            st.builds(lambda s, i: f"{s}:{i}", st.integers(max_value=-1), st.integers(0, 9)),
            st.text(string.hexdigits, max_size=20)
            .map(lambda t: "photo:" + t)
            .filter(lambda t: not re.fullmatch(r"photo:[0-9a-f]{16}", t)),
            WORDS,
        )
    wrong_ids = st.text(string.hexdigits, max_size=30).filter(lambda t: not re.fullmatch("[0-9a-f]{16}", t))
    return st.one_of(WORDS, wrong_ids)


@st.composite
def queries(draw):
    """(path, [(key, value)...], the names given bad values, the names given any text, an odd key or None)."""
    path = draw(st.sampled_from(sorted(ROUTES)))
    spec = ROUTES[path]
    pairs, bad, junk = [], set(), set()
    for name, (kind, lo, hi, required) in spec.items():
        choice = draw(st.sampled_from(["valid", "valid", "valid", "invalid", "junk", "absent"]))
        if choice == "absent":
            if required:
                bad.add(name)
            continue
        if choice == "valid":
            pairs.append((name, draw(valid(kind, lo, hi, name))))
        elif choice == "invalid":
            pairs.append((name, draw(invalid(kind, lo, hi))))
            bad.add(name)
        else:  # anything at all: no expectation but a clean answer
            pairs.append((name, draw(st.text(max_size=30))))
            junk.add(name)
    odd = draw(st.sampled_from([None, None, None, "unknown", "repeat"]))
    if odd == "unknown":
        pairs.append((draw(st.sampled_from(["color", "size", "x", "seed2", "Scale"])), draw(st.text(max_size=8))))
    elif odd == "repeat" and pairs:
        pairs.append(draw(st.sampled_from(pairs)))
    draw(st.randoms()).shuffle(pairs)
    return path, pairs, bad, junk, odd


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    G = load_generator(make_tiny_model(tmp_path_factory.mktemp("props") / "tiny32.safetensors"))
    app = create_app(G, costs=Costs(face_ms=1.0, step_ms=1.0), perceptual=False, face_check=False)
    with BackgroundServer(app) as s:
        s.app = app
        yield s


def check_clean(status: int, headers: dict, body: bytes) -> str | None:
    """A 2xx/3xx, or a 4xx with a one-line JSON error: return the error (None for a success)."""
    assert status < 500, (status, body[:300])
    if status < 400:
        return None
    assert headers["content-type"] == "application/json", headers
    err = json.loads(body)["error"]
    assert err and "\n" not in err and "Traceback" not in err and len(err) < 400
    return err


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(q=queries())
def test_any_query_works_or_is_a_clean_4xx_naming_the_parameter(server, q):
    path, pairs, bad, junk, odd = q
    EXAMPLES["query"] += 1
    if EXAMPLES["query"] == 1:
        EXAMPLES["rss0"] = rss_mb()
    t0 = time.monotonic()
    status, h, body = get(server.url + path + ("?" + urllib.parse.urlencode(pairs) if pairs else ""))
    assert time.monotonic() - t0 < SECONDS_PER_REQUEST, (path, pairs)
    err = check_clean(status, h, body)
    if odd is not None and (odd == "unknown" or len({k for k, _ in pairs}) < len(pairs)):
        assert status == 400 and ("unknown parameter" in err or "more than once" in err or bad), err
        return
    spec = ROUTES[path]
    if junk and not bad:
        return  # any text: a clean answer is all that is asked
    if bad:
        assert status in (400, 404), (path, pairs, status, err)
        named = [n for n in bad | junk if re.search(rf"\b{re.escape(n)}\b", err)]
        # a photo id of the right form that no projection has is a 404; anything else names the parameter
        assert named or status == 404, (err, bad)
        if status == 400 and named:
            kind, lo, hi, _ = spec[named[0]]
            if kind in RANGE_TEXT and "missing" not in err:
                assert RANGE_TEXT[kind].format(lo=lo, hi=hi) in err, err
        return
    if "id" in spec:  # well-formed ids of no projection
        assert status == 404 and "no projection 0123456789abcdef" in err
        return
    # every parameter valid: the image, or the per-request size limit with the numbers
    assert status == 200 or (status == 400 and "the limit is" in err), (path, pairs, err)
    if status == 200 and path.endswith(".png"):
        assert Image.open(io.BytesIO(body)).format == "PNG"


def _png(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


FACE_PNG = _png(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8))
FACE_JPEG = _png(np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8), "JPEG")


@st.composite
def uploads(draw):
    """Bytes that are or resemble a photo: random bytes, a cut or bit-flipped PNG/JPEG, an intact one."""
    kind = draw(st.sampled_from(["random", "cut", "flip", "intact"]))
    base = draw(st.sampled_from([FACE_PNG, FACE_JPEG]))
    if kind == "random":
        return draw(st.binary(max_size=4096))
    if kind == "cut":
        return base[: draw(st.integers(0, len(base)))]
    if kind == "flip":
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        return bytes(data)
    return base


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=uploads(), steps=st.one_of(st.integers(0, 2).map(str), st.integers(101, 10**6).map(str), WORDS))
def test_any_upload_is_projected_or_a_clean_4xx(server, body, steps):
    EXAMPLES["upload"] += 1
    req = urllib.request.Request(f"{server.url}/api/project?steps={urllib.parse.quote(steps)}", data=body)
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, h, out = r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        status, h, out = e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()
    assert time.monotonic() - t0 < SECONDS_PER_REQUEST
    if status == 503:  # the render lane is full of earlier examples' projections: the documented answer
        assert int(h["retry-after"]) >= 1
        return
    err = check_clean(status, h, out)
    if not steps.isdigit() or int(steps) > 100:
        assert status == 400 and "steps must be an integer 0..100" in err, err
    elif status != 202:
        assert status in (400, 413) and err.startswith("photo: "), err


def test_zz_report_examples_and_memory(server):
    """Runs last in this module: how many examples ran, and the memory they left."""
    grown = rss_mb() - EXAMPLES.get("rss0", rss_mb())
    renderer = server.app.state.renderer
    print(f"\nHypothesis: {EXAMPLES['query']} query examples, {EXAMPLES['upload']} uploads; RSS +{grown:.0f} MB")
    assert renderer.cache.nbytes <= renderer.cache.max_bytes
    assert not renderer.inflight
    assert grown < RSS_GROWTH_MB
