"""The demo's attribute editing: /api/attributes, ``edit=`` on faces and projected photos, ``edit_a``/``edit_b``
on walks, bad edits, models without directions, and (with Chromium) the page's sliders.

The references are independent of the server's code path: ``G.edit`` (and ``editing.edit_latent`` +
``G.render`` for photos and the style family), the shipped directions file read as plain JSON, and the
attribute classifier's view of an edit. Like the other demo tests these run the app in uvicorn
(:class:`BackgroundServer`) and talk to it over real HTTP with the stdlib (Starlette's TestClient needs
httpx, which the project does not depend on)."""

from __future__ import annotations

import io
import json
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the demo extra is not installed (pip install 'fakefacegen[demo]')")
pytest.importorskip("uvicorn", reason="the demo extra is not installed (pip install 'fakefacegen[demo]')")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import make_tiny_style_generator  # noqa: E402
from fakefacegen.demo.lanes import Costs  # noqa: E402
from fakefacegen.demo.params import EDIT_AMOUNT_MAX, EDIT_MAX_ATTRS  # noqa: E402
from fakefacegen.demo.server import BackgroundServer, create_app  # noqa: E402
from fakefacegen.directions import REQUIRED, Directions, DirectionsError, directions_path, weights_hash  # noqa: E402
from fakefacegen.editing import edit_latent, latent_for  # noqa: E402
from fakefacegen.generate import bundled_model_path, load_generator  # noqa: E402
from fakefacegen.images import upscale  # noqa: E402
from test_demo import get, make_tiny_model, png  # noqa: E402
from test_demo_project import encode, post, wait_done  # noqa: E402

FIXED = Costs(face_ms=1.0, step_ms=1.0)
SHIPPED = directions_path(bundled_model_path())


@pytest.fixture(scope="module")
def bundled():
    return load_generator()


@pytest.fixture(scope="module")
def server(bundled):
    app = create_app(bundled, costs=FIXED, perceptual=False, face_check=False)
    with BackgroundServer(app) as s:
        s.app = app
        yield s


def face(url: str) -> np.ndarray:
    status, h, body = get(url)
    assert status == 200, body[:300]
    assert h["content-type"] == "image/png"
    return png(body)


def error(url: str) -> tuple[int, str]:
    status, h, body = get(url)
    assert h["content-type"] == "application/json", (status, body[:200])
    err = json.loads(body)["error"]
    assert "\n" not in err and "Traceback" not in err
    return status, err


def q(**kw) -> str:
    return urllib.parse.urlencode({k: v for k, v in kw.items() if v is not None})


# --------------------------------------------------------------------------------------------
# The offered attributes


def test_attributes_route_lists_the_shipped_attributes_headline_first(server, bundled):
    shipped = json.loads(SHIPPED.read_text())["attributes"]  # the file as plain JSON, not through Directions
    status, h, body = get(server.url + "/api/attributes")
    assert status == 200 and h["content-type"] == "application/json"
    ed = json.loads(body)
    assert ed["available"] is True and ed["space"] == "z"
    names = [a["name"] for a in ed["attributes"]]
    assert names[:9] == list(REQUIRED)  # Smiling, Young, Male, Eyeglasses, ... in that order
    assert names[9:] == sorted(set(shipped) - set(REQUIRED)) and len(names) == len(shipped) == 30
    assert [a["headline"] for a in ed["attributes"]] == [True] * 9 + [False] * 21
    for a in ed["attributes"]:
        clf = shipped[a["name"]]["classifier"]
        assert a["accuracy"] == clf["accuracy"] and a["auc"] == clf["auc"]
        lo, hi = a["range"]
        # -3..+3, widened to 4 where the shipped measurement of +-2 crossed fewer than half the faces
        assert hi == (4.0 if shipped[a["name"]]["measured"]["cross_up"] < 0.5 else 3.0)
        assert lo == (-4.0 if shipped[a["name"]]["measured"]["cross_down"] < 0.5 else -3.0)
        assert -EDIT_AMOUNT_MAX <= lo < 0 < hi <= EDIT_AMOUNT_MAX
    by = {a["name"]: a for a in ed["attributes"]}
    assert by["Eyeglasses"]["range"] == [-3.0, 4.0] and by["Smiling"]["range"] == [-3.0, 3.0]
    assert by["Smiling"]["accuracy"] == 0.905  # docs/editing.md's table
    assert "Mustache" in ed["not_offered"] and ed["limits"]["max_attrs"] == EDIT_MAX_ATTRS
    # /api/model carries the same, for the page's one fetch
    assert json.loads(get(server.url + "/api/model")[2])["editing"] == ed
    status, err = error(server.url + "/api/attributes?x=1")
    assert status == 400 and "unknown parameter 'x'" in err


# --------------------------------------------------------------------------------------------
# Edited faces are G.edit's faces


def test_an_edited_face_is_G_edit_pixel_for_pixel(server, bundled):
    cases = [
        (0, 3, None, {"Smiling": 2.0}),
        (7, 0, 0.7, {"Young": -1.5, "Eyeglasses": 3.0}),
        (123456, 41, None, {"Blond_Hair": 2.5, "Smiling": -1.0, "Bald": 4.0}),
    ]
    for seed, index, t, attrs in cases:
        edit = ",".join(f"{k}:{v:g}" for k, v in attrs.items())
        got = face(f"{server.url}/api/face.png?{q(seed=seed, index=index, truncation=t, edit=edit)}")
        want = bundled.edit(seed=seed, index=index, attrs=attrs, truncation=t)
        # alone in its batch, as G.edit renders it: the same float ops, the same pixels
        np.testing.assert_array_equal(got, want, err_msg=f"{seed}:{index} {edit}")
    # scale: the edited face, upscaled as every face of the demo is
    big = face(f"{server.url}/api/face.png?seed=0&index=3&edit=Smiling:2&scale=3")
    np.testing.assert_array_equal(big, upscale(bundled.edit(seed=0, index=3, attrs={"Smiling": 2.0})[None], 3)[0])


AMOUNTS = st.integers(-30, 30).map(lambda k: k / 10)  # the sliders' 0.1 steps over -3..+3


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    index=st.integers(0, 1000),
    attrs=st.dictionaries(st.sampled_from(REQUIRED), AMOUNTS, min_size=1, max_size=3),
)
def test_any_slider_setting_is_G_edit_or_a_400_that_edit_latent_also_refuses(server, bundled, seed, index, attrs):
    edit = ",".join(f"{k}:{v:g}" for k, v in attrs.items())
    status, h, body = get(f"{server.url}/api/face.png?{q(seed=seed, index=index, edit=edit)}")
    try:
        want = bundled.edit(seed=seed, index=index, attrs=attrs)
    except DirectionsError as e:  # nearly parallel directions (Male with Heavy_Makeup): refused both ways
        assert status == 400 and "nearly parallel" in str(e)
        assert json.loads(body)["error"].startswith("edit: cannot edit ")
        return
    assert status == 200, body[:300]
    np.testing.assert_array_equal(png(body), want)


def test_an_edit_of_zero_is_the_unedited_face(server):
    plain = get(server.url + "/api/face.png?seed=5&index=2")
    for edit in ("Smiling:0", "Smiling:+0,Young:-0", "Smiling:0.00001", ""):  # 1e-5 rounds to 0 (4 decimals)
        status, h, body = get(f"{server.url}/api/face.png?{q(seed=5, index=2, edit=edit)}")
        assert status == 200 and body == plain[2] and h["etag"] == plain[1]["etag"], edit
        assert 'filename="seed5-00002.png"' in h["content-disposition"]


def test_an_edit_changes_the_picture_the_way_the_classifier_sees_it(server, bundled):
    from fakefacegen.attributes import load_classifier

    plain = face(server.url + "/api/face.png?seed=11&index=0")
    status, h, body = get(server.url + "/api/face.png?seed=11&index=0&edit=Smiling:2")
    assert status == 200 and 'filename="seed11-00000-edited.png"' in h["content-disposition"]
    assert np.abs(png(body).astype(int) - plain).mean() > 2
    # the same edit written in another order: the same picture and cache entry; another edit: another picture
    a = get(server.url + "/api/face.png?seed=11&index=0&edit=Smiling:2,Young:-1")
    b = get(server.url + "/api/face.png?seed=11&index=0&edit=Young:-1,Smiling:2")
    assert a[2] == b[2] and a[1]["etag"] == b[1]["etag"] != h["etag"]
    # +2 smiles more than -2 in the attribute classifier's eyes, face by face on average
    clf = load_classifier()
    col = clf.attributes.index("Smiling")
    up = np.stack([face(f"{server.url}/api/face.png?seed=11&index={i}&edit=Smiling:2") for i in range(8)])
    down = np.stack([face(f"{server.url}/api/face.png?seed=11&index={i}&edit=Smiling:-2") for i in range(8)])
    p_up, p_down = clf.probabilities(up)[:, col], clf.probabilities(down)[:, col]
    assert p_up.mean() - p_down.mean() > 0.3, (p_up, p_down)


# --------------------------------------------------------------------------------------------
# Walks between edited faces


def strip_frames(strip: np.ndarray, frames: int, R: int) -> list[np.ndarray]:
    return [strip[2 : 2 + R, 2 + k * (R + 2) : 2 + k * (R + 2) + R] for k in range(frames)]


def test_a_walk_starts_and_ends_at_the_edited_faces(server, bundled):
    R = bundled.resolution
    a_edit = bundled.edit(seed=0, index=3, attrs={"Smiling": 2.0})
    b_plain = bundled.sample(1, 9)[0]
    status, h, body = get(server.url + "/api/walk.png?a=0:3&b=9:0&frames=5&edit_a=Smiling:2")
    assert status == 200 and 'filename="walk-0-3-edited-9-0.png"' in h["content-disposition"]
    fr = strip_frames(png(body), 5, R)
    # a batch of 5 on the server vs 1 here: equal up to float rounding
    assert np.abs(fr[0].astype(int) - a_edit).max() <= 1
    assert np.abs(fr[-1].astype(int) - b_plain).max() <= 1
    plain_a = bundled.sample(4, 0)[3]
    assert np.abs(fr[0].astype(int) - plain_a).mean() > 2  # it starts at the edit, not at the plain face
    mid = fr[2].astype(int)
    assert np.abs(mid - a_edit).mean() > 1 and np.abs(mid - b_plain).mean() > 1
    # both ends edited, with a truncation
    b_edit = bundled.edit(seed=9, index=0, attrs={"Blond_Hair": 2.0, "Young": 1.0}, truncation=0.8)
    a_t = bundled.edit(seed=0, index=3, attrs={"Smiling": 2.0}, truncation=0.8)
    url = "/api/walk.png?a=0:3&b=9:0&frames=4&truncation=0.8&edit_a=Smiling:2&edit_b=Young:1,Blond_Hair:2"
    fr = strip_frames(face(server.url + url), 4, R)
    assert np.abs(fr[0].astype(int) - a_t).max() <= 1 and np.abs(fr[-1].astype(int) - b_edit).max() <= 1
    # the animation too (its palette costs a little)
    status, h, body = get(server.url + "/api/walk.gif?a=0:3&b=9:0&frames=4&edit_a=Smiling:2")
    first = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    assert status == 200 and np.abs(first.astype(int) - a_edit).mean() < 6
    # an edit of zero is the plain walk, byte for byte
    plain = get(server.url + "/api/walk.png?a=0:3&b=9:0&frames=5")
    zero = get(server.url + "/api/walk.png?a=0:3&b=9:0&frames=5&edit_a=Smiling:0&edit_b=")
    assert zero[0] == 200 and zero[2] == plain[2]


def test_a_projected_photo_can_be_edited_and_walked_from(server, bundled):
    target = bundled.sample(1, 21)[0]
    status, _, body = post(f"{server.url}/api/project?steps=0", encode(target), {"Content-Type": "image/png"})
    assert status == 202
    pid = json.loads(body)["id"]
    job, _ = wait_done(server.url, pid)
    assert job["state"] == "done"
    latent = server.app.state.photos.jobs[pid].latent
    want = bundled.synthesize_latents(edit_latent(bundled.directions(), latent, {"Young": -2.0}))[0]
    status, h, body = get(f"{server.url}/api/projection.png?id={pid}&edit=Young:-2")
    assert status == 200 and f'filename="photo-{pid[:6]}-edited.png"' in h["content-disposition"]
    np.testing.assert_array_equal(png(body), want)
    strip = face(f"{server.url}/api/walk.png?a=photo:{pid}&b=3:0&frames=4&edit_a=Young:-2")
    assert np.abs(strip_frames(strip, 4, bundled.resolution)[0].astype(int) - want).max() <= 1


# --------------------------------------------------------------------------------------------
# Bad edits


BAD = [
    ("/api/face.png?seed=1&edit=Foo:1", "edit: unknown attribute 'Foo'"),
    ("/api/face.png?seed=1&edit=smiling:1", "edit: unknown attribute 'smiling'"),
    ("/api/face.png?seed=1&edit=Mustache:1", "edit: Mustache is not offered for this model (only 3 of 20000"),
    ("/api/face.png?seed=1&edit=Smiling:9", "edit: the amount of Smiling must be a number -5..5 (sigmas), got '9'"),
    ("/api/face.png?seed=1&edit=Smiling:-5.01", "amount of Smiling must be a number -5..5"),
    ("/api/face.png?seed=1&edit=Smiling:nan", "amount of Smiling must be a number -5..5 (sigmas), got 'nan'"),
    ("/api/face.png?seed=1&edit=Smiling:inf", "amount of Smiling must be"),
    ("/api/face.png?seed=1&edit=Smiling:1e999", "amount of Smiling must be"),
    ("/api/face.png?seed=1&edit=Smiling:lots", "got 'lots'"),
    ("/api/face.png?seed=1&edit=Smiling", "edit must be NAME:AMOUNT pairs separated by commas"),
    ("/api/face.png?seed=1&edit=Smiling:1,", "edit must be NAME:AMOUNT pairs"),
    ("/api/face.png?seed=1&edit=Smiling:1:2", "edit must be NAME:AMOUNT pairs"),
    ("/api/face.png?seed=1&edit=Smiling=1", "edit must be NAME:AMOUNT pairs"),
    ("/api/face.png?seed=1&edit=Smiling:1,Smiling:2", "edit: Smiling is given more than once"),
    ("/api/face.png?seed=1&edit=Smiling:1&edit=Young:1", "parameter 'edit' is given more than once"),
    ("/api/face.png?seed=1&edit=" + ",".join(f"Smiling:{i}" for i in range(13)), "edit: at most 12 attributes"),
    ("/api/face.png?seed=1&edit=" + "x" * 1001, "edit is 1001 characters long; the limit is 1000"),
    ("/api/face.png?seed=1&edit=Male:2,Heavy_Makeup:1", "edit: cannot edit Heavy_Makeup, Male at once: the directions"),
    ("/api/walk.png?a=1:0&b=2:0&edit_a=Foo:1", "edit_a: unknown attribute 'Foo'"),
    ("/api/walk.gif?a=1:0&b=2:0&edit_b=Young:-7", "edit_b: the amount of Young must be"),
    ("/api/walk.png?a=1:0&b=2:0&edit=Young:1", "unknown parameter 'edit'"),
    ("/api/grid.png?seed=1&edit=Young:1", "unknown parameter 'edit'"),
    ("/api/projection.png?id=0123456789abcdef&edit=Foo:1", "edit: unknown attribute 'Foo'"),
]


@pytest.mark.parametrize("path,message", BAD, ids=[b[0][:60] for b in BAD])
def test_bad_edits_are_a_400_naming_the_parameter(server, path, message):
    status, err = error(server.url + path)
    assert status == 400 and message in err, err
    assert len(err) < 400


EDIT_TEXT = st.one_of(
    st.text(max_size=60),
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from(REQUIRED + ("Mustache", "Foo", "")), st.text(max_size=8)),
            st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=6)),
        ),
        max_size=14,
    ).map(lambda kv: ",".join(f"{k}:{v}" for k, v in kv)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=EDIT_TEXT)
def test_any_edit_text_is_an_edited_face_or_a_clean_400_naming_edit(server, edit):
    status, h, body = get(f"{server.url}/api/face.png?{q(seed=3, index=1, edit=edit)}")
    if status == 200:
        assert png(body).shape == (64, 64, 3)
        return
    assert status == 400 and h["content-type"] == "application/json", (status, body[:200])
    err = json.loads(body)["error"]
    assert err.startswith("edit") and "\n" not in err and len(err) < 400, err


def test_the_server_still_edits_after_bad_edits(server, bundled):
    for path, _ in BAD[:5]:
        get(server.url + path)
    np.testing.assert_array_equal(
        face(server.url + "/api/face.png?seed=1&edit=Smiling:1"), bundled.edit(seed=1, attrs={"Smiling": 1.0})
    )


# --------------------------------------------------------------------------------------------
# Models without directions, and the style family


def test_a_model_without_directions_offers_no_edits(tmp_path):
    model = make_tiny_model(tmp_path / "myrun.safetensors")
    with BackgroundServer(create_app(load_generator(model), costs=FIXED)) as s:
        ed = json.loads(get(s.url + "/api/attributes")[2])
        assert ed["available"] is False and ed["attributes"] == []
        assert "myrun-directions.json: no directions file" in ed["why_not"] and str(tmp_path) not in ed["why_not"]
        assert json.loads(get(s.url + "/api/model")[2])["editing"] == ed
        for path, name in (
            ("/api/face.png?seed=1&edit=Smiling:1", "edit"),
            ("/api/walk.png?a=1:0&b=2:0&edit_b=Smiling:1", "edit_b"),
            ("/api/projection.png?id=0123456789abcdef&edit=Smiling:1", "edit"),
        ):
            status, err = error(s.url + path)
            assert status == 400 and err.startswith(f"{name}: this model cannot be edited: myrun-directions.json"), err
            assert str(tmp_path) not in err
        # no edit, or an empty one, is fine
        assert get(s.url + "/api/face.png?seed=1&edit=")[0] == 200
    # directions made for other weights (the bundled model's, copied beside it) are refused, not used
    (tmp_path / "myrun-directions.json").write_bytes(SHIPPED.read_bytes())
    with BackgroundServer(create_app(load_generator(model), costs=FIXED)) as s:
        ed = json.loads(get(s.url + "/api/attributes")[2])
        assert ed["available"] is False and "found for other weights" in ed["why_not"]
        status, err = error(s.url + "/api/face.png?seed=1&edit=Smiling:1")
        assert status == 400 and "other weights" in err and str(tmp_path) not in err
    # a malformed file beside the model: no sliders, saying why, rather than a demo that does not start
    (tmp_path / "myrun-directions.json").write_text(
        json.dumps({**json.loads(SHIPPED.read_text()), "format_version": "1.0", "model": "x"})
    )
    with BackgroundServer(create_app(load_generator(model), costs=FIXED)) as s:
        ed = json.loads(get(s.url + "/api/attributes")[2])
        assert ed["available"] is False and ed["why_not"] == (
            "myrun-directions.json: format_version must be an integer, got '1.0'"
        )


def synthetic_directions(G, path: Path, names: tuple[str, ...] = ("Young", "Smiling", "Zebra")) -> Directions:
    """Random unit directions in the model's edit space, sigmas measured on its codes, saved as its file."""
    rng = np.random.default_rng(0)
    normals = rng.standard_normal((len(names), G.z_dim)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    codes = G.codes(500, 123).cpu().numpy()
    sigmas = (codes @ normals.T).std(0).astype(np.float64)
    info = {"model": {"weights_sha1": weights_hash(G)}, "attributes": {n: {} for n in names}}
    d = Directions(G.edit_space, list(names), normals, sigmas, np.zeros(len(names)), info)
    d.save(path)
    return d


def test_the_style_family_edits_in_w(tmp_path):
    G = load_generator(make_tiny_style_generator(tmp_path / "style.safetensors"))
    synthetic_directions(G, tmp_path / "style-directions.json")
    with BackgroundServer(create_app(G, costs=FIXED)) as s:
        ed = json.loads(get(s.url + "/api/attributes")[2])
        assert ed["space"] == "w" and [a["name"] for a in ed["attributes"]] == ["Smiling", "Young", "Zebra"]
        assert ed["attributes"][0]["accuracy"] is None and ed["attributes"][0]["range"] == [-3.0, 3.0]
        attrs = {"Smiling": 2.0, "Zebra": -1.5}
        got = face(s.url + "/api/face.png?seed=4&index=2&truncation=0.9&edit=Smiling:2,Zebra:-1.5")
        want = G.edit(seed=4, index=2, attrs=attrs, truncation=0.9)
        np.testing.assert_array_equal(got, want)
        # the reference written out: w of the face, the step of edit_latent, one render
        base = latent_for(G, seed=4, index=2, truncation=0.9)
        np.testing.assert_array_equal(want, G.render(edit_latent(G.directions(), base, attrs))[0])
        assert np.abs(got.astype(int) - G.sample(3, 4, truncation=0.9)[2]).mean() > 1
        # a walk from the edited face runs in W+ and starts there
        strip = face(s.url + "/api/walk.png?a=4:2&b=5:0&frames=3&truncation=0.9&edit_a=Smiling:2,Zebra:-1.5")
        assert np.abs(strip_frames(strip, 3, G.resolution)[0].astype(int) - want).max() <= 1


# --------------------------------------------------------------------------------------------
# The page's sliders, in a real Chromium (skips without one, as test_demo_browser does)


def _browser_available() -> bool:
    from test_demo_browser import CHROMEDRIVER, CHROMIUM

    return bool(CHROMIUM and CHROMEDRIVER)


EDIT_KEY = "return document.body.dataset.edit || null"
# the edited face's picture as drawn in the page (RGB rows), to compare with G.edit
EDITED_PIXELS = """const im = document.getElementById('edit-face');
const c = document.createElement('canvas'); c.width = im.naturalWidth; c.height = im.naturalHeight;
const g = c.getContext('2d'); g.drawImage(im, 0, 0);
const d = g.getImageData(0, 0, c.width, c.height).data;
const rgb = []; for (let i = 0; i < d.length; i += 4) rgb.push(d[i], d[i + 1], d[i + 2]);
return [c.width, rgb];"""
SLIDE = """const s = document.getElementById('attr-' + arguments[0]);
s.value = String(arguments[1]); s.dispatchEvent(new Event('input', {bubbles: true}));
if (arguments[2]) s.dispatchEvent(new Event('change', {bubbles: true}));"""


@pytest.mark.slow
@pytest.mark.skipif(not _browser_available(), reason="no headless Chromium + chromedriver (scripts/install_browser.sh)")
def test_page_sliders_edit_the_picked_face_and_the_walk(server, bundled):
    from test_demo_browser import Browser

    b = Browser()
    try:
        b.open(server.url + "/?seed=0")
        b.wait("return document.body.dataset.grid === '0|16|null'")
        b.click('#grid .face[data-index="3"]')
        b.wait("return !document.getElementById('edit-panel').hidden")
        assert b.js("return document.querySelectorAll('#sliders input[type=range]').length") == 9
        assert b.js("return document.querySelectorAll('#sliders-more input[type=range]').length") == 21
        labels = b.js("return [...document.querySelectorAll('#sliders label')].map(l => l.htmlFor)")
        assert labels == [f"attr-{a}" for a in REQUIRED]
        assert b.js("return document.getElementById('attr-Eyeglasses').max") == "4"

        # a burst of slider moves: a few requests, never two at once for this face, the last value wins
        for k in range(1, 21):
            b.js(SLIDE, "Smiling", k / 10, k == 20)
        b.wait("return document.body.dataset.edit === '0:3|Smiling:2|null'")
        fx = b.js("return window.fakefacegen")
        assert fx["editInFlightMax"] == 1 and 1 <= fx["editRequests"] < 20, fx
        w, rgb = b.js(EDITED_PIXELS)
        np.testing.assert_array_equal(
            np.array(rgb, np.uint8).reshape(w, w, 3), bundled.edit(seed=0, index=3, attrs={"Smiling": 2.0})
        )
        href = b.js("return document.getElementById('download-edit').href")
        assert "edit=Smiling%3A2" in href
        with urllib.request.urlopen(href) as r:
            np.testing.assert_array_equal(
                np.asarray(Image.open(r).convert("RGB")), bundled.edit(seed=0, index=3, attrs={"Smiling": 2.0})
            )

        # face B: the walk runs from the edited A
        b.click('#grid .face[data-index="5"]')
        assert b.wait("return document.body.dataset.walk || null") == "0:3|0:5|null|Smiling:2|null"
        assert b.js("return document.getElementById('edit-target').textContent").startswith("face B")

        # a refused pair (nearly parallel directions) shows the server's message and snaps back
        b.click('#edit-which button[data-k="0"]')
        b.js(SLIDE, "Male", 2, True)
        b.wait("return document.body.dataset.edit === '0:3|Male:2,Smiling:2|null'")
        b.js(SLIDE, "Heavy_Makeup", 1, True)
        err = b.wait("const e = document.getElementById('error'); return e.hidden ? null : e.textContent")
        assert "nearly parallel" in err
        b.wait("return document.getElementById('attr-Heavy_Makeup').value === '0'")

        # reset: the plain face again, and the walk from it
        b.click("#edit-reset")
        b.wait("return document.body.dataset.edit === '0:3|null|null'")
        b.wait("return document.body.dataset.walk === '0:3|0:5|null'")
        w, rgb = b.js(EDITED_PIXELS)
        plain = bundled.sample(4, 0)[3]
        assert np.abs(np.array(rgb, np.uint8).reshape(w, w, 3).astype(int) - plain).max() <= 1
        # the browser logs the refused request's 400; nothing else went wrong
        assert [e for e in b.console_errors() if "Heavy_Makeup%3A1" not in e] == []
    finally:
        b.close()


def test_describe_editing_ignores_entries_that_are_not_mappings():
    """A hand-edited file whose per-attribute 'classifier' / 'measured' are not mappings: no accuracy, the
    default range, rather than an AttributeError at start-up."""
    from fakefacegen.demo.model_card import describe_editing

    info = {"attributes": {"Smiling": {"classifier": "0.9", "measured": [0.1]}, "Young": "x"}}
    d = Directions("z", ["Smiling", "Young"], np.eye(2, 4, dtype=np.float32), np.ones(2), np.zeros(2), info)
    ed = describe_editing(d)
    assert [(a["name"], a["accuracy"], a["range"]) for a in ed["attributes"]] == [
        ("Smiling", None, [-3.0, 3.0]),
        ("Young", None, [-3.0, 3.0]),
    ]
