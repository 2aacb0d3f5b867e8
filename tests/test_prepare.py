"""Tests for fakefacegen.prepare (synthetic images only, plus one opt-in real-data test)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from fakefacegen import __version__
from fakefacegen import prepare as P
from fakefacegen.prepare import (
    DatasetFormatError,
    PrepareError,
    load_images,
    load_manifest,
    prepare_dataset,
)
from fakefacegen.prepare import workers as prepare_workers

REPO = Path(__file__).resolve().parents[1]
CELEBA = REPO.parent / "shared" / "data" / "celeba" / "img_align_celeba"


# --------------------------------------------------------------------------- helpers


def save(path: Path, im: Image.Image, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, fmt, **kw)
    return path


def solid(color, size=(80, 60), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def noise(w, h, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    # smooth-ish content so JPEG artefacts stay small
    small = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def by_hand(im: Image.Image, size: int) -> np.ndarray:
    """Independent reference: convert, centre square crop, LANCZOS resize."""
    im = im.convert("RGB")
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return np.asarray(im.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.LANCZOS))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(w: int, h: int) -> bytes:
    """A complete, valid 1-bit PNG of w x h (all black) that compresses to a few KB."""
    row = b"\0" * (1 + (w + 7) // 8)
    co = zlib.compressobj(9)
    body = b"".join(co.compress(row) for _ in range(h)) + co.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bombs():
    return bomb_png(12000, 12000), bomb_png(20000, 20000)


def jpeg_bytes(im: Image.Image, **kw) -> bytes:
    bio = io.BytesIO()
    im.save(bio, "JPEG", **kw)
    return bio.getvalue()


def build_malformed_corpus(root: Path, bombs) -> dict[str, str | None]:
    """Write the bad-file corpus.  Returns {rel path: expected skip-reason substring or None (= used)}."""
    exp: dict[str, str | None] = {}

    def put(rel, im=None, fmt=None, data=None, reason=None, **kw):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            p.write_bytes(data)
        else:
            save(p, im, fmt, **kw)
        exp[rel] = reason

    put("good_rgb.jpg", noise(120, 150, 1), "JPEG", quality=95)
    put("good.png", noise(90, 70, 2), "PNG")
    put("good.webp", noise(70, 90, 3), "WEBP", lossless=True)
    put("UPPER.JPEG", noise(100, 100, 4), "JPEG")
    put("sub/dir/nested.png", noise(64, 64, 5), "PNG")
    put("png_named.jpg", noise(80, 80, 6), "PNG")  # wrong extension, real PNG: used
    put("gray.jpg", solid(100, (90, 90), "L"), "JPEG")
    put("cmyk.jpg", solid((0, 255, 255, 0), (90, 90), "CMYK"), "JPEG", quality=95)  # red
    put("rgba.png", solid((255, 0, 0, 0), (64, 64), "RGBA"), "PNG")  # fully transparent red
    put("la.png", solid((50, 128), (64, 64), "LA"), "PNG")
    pal = Image.new("P", (64, 64), 1)
    pal.putpalette([0, 0, 0] + [0, 255, 0] * 255)
    put("pal.png", pal, "PNG")
    put("pal_trns.png", pal, "PNG", transparency=1)  # green index made transparent -> white
    put("i16.png", Image.fromarray(np.full((70, 70), 40000, np.uint16)), "PNG")
    # --- skipped
    put("one_by_one.png", solid((1, 2, 3), (1, 1)), "PNG", reason="too small")
    put("thin.png", solid((1, 2, 3), (15, 200)), "PNG", reason="too small")
    put("zero.jpg", data=b"", reason="empty file")
    put("text.jpg", data=b"this is not a picture\n" * 20, reason="not a JPEG/PNG/WebP")
    full = jpeg_bytes(noise(200, 160, 7))
    put("trunc.jpg", data=full[: len(full) // 2], reason="truncated")
    bio = io.BytesIO()
    noise(100, 100, 8).save(bio, "PNG")
    put("trunc.png", data=bio.getvalue()[: len(bio.getvalue()) // 2], reason="truncated")
    bio = io.BytesIO()
    solid((9, 9, 9), (100, 100)).save(bio, "GIF")
    put("gif_named.png", data=bio.getvalue(), reason="not a JPEG/PNG/WebP")
    put("bomb_guard.png", data=bombs[0], reason="decompression bomb")  # 144 MP > 100 MP guard
    put("bomb_pil.png", data=bombs[1], reason="decompression bomb")  # 400 MP: Pillow's own error
    # --- ignored entirely (not candidates)
    (root / "notes.txt").write_text("hello")
    (root / ".hidden.jpg").write_bytes(b"garbage")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._good.jpg").write_bytes(b"garbage")
    (root / ".git").mkdir()
    (root / ".git" / "x.png").write_bytes(b"garbage")
    return exp


def rows_by_label(m: dict, labels: list[str]) -> dict[str, int]:
    """Map each used label to its row, given all candidate labels (sorted order = row order)."""
    skipped = {s["path"] for s in m["skipped"]}
    used = [lab for lab in sorted(labels) if lab not in skipped]
    return {lab: i for i, lab in enumerate(used)}


def no_temp_dirs(parent: Path) -> bool:
    return not any(".tmp-" in p.name or ".old-" in p.name for p in parent.iterdir())


# --------------------------------------------------------------------------- basic behaviour


def test_shape_dtype_manifest_and_hash(tmp_path):
    src = tmp_path / "src"
    save(src / "a.jpg", noise(100, 80, 1), quality=95)
    save(src / "b.png", noise(300, 200, 2))
    save(src / "c.webp", noise(70, 90, 3), lossless=True)
    save(src / "d" / "e.PNG", noise(64, 64, 4))
    (src / "readme.txt").write_text("x")
    out = tmp_path / "ds"
    m = prepare_dataset(src, out, 32, workers=1, progress=False)

    arr = np.load(out / "images.npy", mmap_mode="r")
    assert arr.shape == (4, 32, 32, 3) and arr.dtype == np.uint8 and arr.flags["C_CONTIGUOUS"]
    assert m == json.loads((out / "manifest.json").read_text())
    assert m["format"] == "fakefacegen-dataset" and m["format_version"] == 1
    assert m["source"] == str(src.resolve()) and m["source_kind"] == "folder"
    assert m["count"] == 4 and m["files_seen"] == 4 and m["skipped"] == []
    assert m["count"] + len(m["skipped"]) == m["files_seen"]
    assert m["size"] == 32 and m["crop"] == "center" and m["filter"] == "lanczos"
    assert isinstance(m["draft_mode"], bool)
    assert m["content_hash"] == hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
    assert m["fakefacegen_version"] == __version__
    assert m["elapsed_s"] > 0 and m["images_per_s"] > 0
    assert load_manifest(out, verify=True)["content_hash"] == m["content_hash"]
    assert np.array_equal(load_images(out), arr)
    assert sorted(p.name for p in out.iterdir()) == ["images.npy", "manifest.json", "names.txt"]
    assert no_temp_dirs(tmp_path)


def test_center_crop_is_centred(tmp_path):
    red, blue, green = (255, 0, 0), (0, 0, 255), (0, 255, 0)
    wide = Image.new("RGB", (300, 100), red)
    wide.paste(blue, (100, 0, 200, 100))
    tall = Image.new("RGB", (100, 300), green)
    tall.paste(blue, (0, 100, 100, 200))
    # off-by-one widths: margin 101 left / 100 right -> integer crop at (w - s) // 2
    odd = Image.new("RGB", (301, 100), red)
    odd.paste(blue, (100, 0, 200, 100))
    save(tmp_path / "s" / "1wide.png", wide)
    save(tmp_path / "s" / "2tall.png", tall)
    save(tmp_path / "s" / "3odd.png", odd)
    # JPEGs decoded in draft mode (side 300 >= 4*64 -> 1/4 scale), 4:4:4 chroma.
    # 4aligned: left = (516 - 300) // 2 = 108 -> 27 whole quarter-scale pixels.
    # 5frac:    left = (518 - 300) // 2 = 109 -> 27.25: the crop edge splits a decoded pixel.
    for name, w, left in (("4aligned.jpg", 516, 108), ("5frac.jpg", 518, 109)):
        jp = Image.new("RGB", (w, 300), red)
        jp.paste(blue, (left, 0, left + 300, 300))
        save(tmp_path / "s" / name, jp, quality=98, subsampling=0)
    m = prepare_dataset(tmp_path / "s", tmp_path / "o", 64, workers=1, progress=False)
    a = np.load(tmp_path / "o" / "images.npy").astype(int)
    for i in range(2):  # lossless PNGs: exactly blue everywhere
        assert (a[i] == blue).all(), i
    # odd width: (301-100)//2 = 100 -> columns 100..199 -> pure blue as well
    assert (a[2] == blue).all()
    assert m["draft_decoded"] == 2
    assert a[3][..., 0].max() < 12 and a[3][..., 2].min() > 240
    # fractional edge: only the outermost output columns see the mixed decoded pixel,
    # and symmetrically (a crop shifted by one output pixel would show ~255 on one side)
    red_cols = a[4][..., 0].mean(0)
    assert red_cols[1:-1].max() < 12
    assert red_cols[0] < 64 and red_cols[-1] < 64 and abs(red_cols[0] - red_cols[-1]) < 16


def test_matches_independent_pil_computation(tmp_path):
    src = tmp_path / "s"
    png = noise(211, 157, 11)
    save(src / "a.png", png)
    jim = noise(400, 520, 12)
    save(src / "b.jpg", jim, quality=95)
    exact = prepare_dataset(src, tmp_path / "exact", 64, workers=1, progress=False, draft=False)
    a = np.load(tmp_path / "exact" / "images.npy")
    assert exact["draft_decoded"] == 0
    assert np.array_equal(a[0], by_hand(png, 64))
    assert np.array_equal(a[1], by_hand(Image.open(src / "b.jpg"), 64))
    fast = prepare_dataset(src, tmp_path / "fast", 64, workers=1, progress=False)
    b = np.load(tmp_path / "fast" / "images.npy")
    assert fast["draft_decoded"] == 1  # only the JPEG: 400 >= 4*64 -> decoded at 1/4
    assert np.array_equal(b[0], a[0])
    diff = np.abs(b[1].astype(int) - a[1].astype(int))
    assert 0 < diff.mean() < 3.0 and np.percentile(diff, 99) < 20


def _ordered_folder(root: Path, n=14) -> list[tuple[str, tuple]]:
    """Files with distinct colours, created in non-sorted order, in nested folders."""
    names = [f"{'ab'[i % 2]}/{(i * 5) % n:03d}.png" for i in range(n)] + ["a.png", "zz.jpg"]
    rng = np.random.default_rng(5)
    specs = []
    for name in names:
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        fmt = "JPEG" if name.endswith(".jpg") else "PNG"
        kw = {"quality": 100} if fmt == "JPEG" else {}
        save(root / name, solid(col, (40 + len(specs), 48)), fmt, **kw)
        specs.append((name, col))
    return sorted(specs)


def test_order_deterministic_and_worker_independent(tmp_path):
    specs = _ordered_folder(tmp_path / "s")
    m1 = prepare_dataset(tmp_path / "s", tmp_path / "o1", 32, workers=1, progress=False)
    m2 = prepare_dataset(tmp_path / "s", tmp_path / "o2", 32, workers=2, progress=False)
    assert m1["workers"] == 1 and m2["workers"] == 2
    a1 = np.load(tmp_path / "o1" / "images.npy")
    a2 = np.load(tmp_path / "o2" / "images.npy")
    assert np.array_equal(a1, a2) and m1["content_hash"] == m2["content_hash"]
    assert len(a1) == len(specs)
    for i, (_, col) in enumerate(specs):  # row i = i-th file in sorted relative-path order
        assert np.abs(a1[i].reshape(-1, 3).mean(0) - col).max() < 3, i
    m3 = prepare_dataset(tmp_path / "s", tmp_path / "o3", 32, workers=2, progress=False, limit=5)
    assert m3["files_seen"] == 5 and np.array_equal(np.load(tmp_path / "o3" / "images.npy"), a1[:5])


@pytest.mark.slow
def test_zip_equals_folder(tmp_path):
    _ordered_folder(tmp_path / "s")
    zp = tmp_path / "faces.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        for p in sorted((tmp_path / "s").rglob("*"), reverse=True):  # scrambled member order
            zf.write(p, p.relative_to(tmp_path / "s").as_posix())
        zf.writestr("__MACOSX/._a.png", b"junk")
        zf.writestr("notes.txt", b"junk")
    mf = prepare_dataset(tmp_path / "s", tmp_path / "of", 64, workers=2, progress=False)
    mz = prepare_dataset(zp, tmp_path / "oz", 64, workers=2, progress=False)
    assert mz["source_kind"] == "zip" and mz["source"] == str(zp.resolve())
    assert mz["files_seen"] == mf["files_seen"] and mz["count"] == mf["count"]
    assert mz["content_hash"] == mf["content_hash"]
    assert np.array_equal(np.load(tmp_path / "of" / "images.npy"), np.load(tmp_path / "oz" / "images.npy"))


def test_zip_unsafe_names_are_skipped_never_extracted(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    good = jpeg_bytes(noise(80, 80, 1))
    zp = work / "evil.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("ok.jpg", good)
        for name in ("../evil.jpg", "a/../../evil2.jpg", "/abs_evil.jpg", "C:/win_evil.jpg", "..\\bs_evil.jpg"):
            zi = zipfile.ZipInfo("placeholder")
            zi.filename = name  # bypass ZipInfo's own sanitising of the name
            zf.writestr(zi, good)
    before = {p for p in tmp_path.rglob("*")}
    m = prepare_dataset(zp, work / "out", 32, workers=1, progress=False)
    assert m["count"] == 1 and m["files_seen"] == 6
    reasons = {s["path"]: s["reason"] for s in m["skipped"]}
    assert set(reasons) == {"../evil.jpg", "a/../../evil2.jpg", "/abs_evil.jpg", "C:/win_evil.jpg", "..\\bs_evil.jpg"}
    assert all(r.startswith("unsafe path") for r in reasons.values())
    after = {p for p in tmp_path.rglob("*")}
    assert {p.relative_to(tmp_path).as_posix() for p in after - before} == {
        "w/out",
        "w/out/images.npy",
        "w/out/manifest.json",
        "w/out/names.txt",
    }
    assert not Path("/abs_evil.jpg").exists()


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("workers", [1, 2])
def test_malformed_corpus(tmp_path, bombs, workers):
    src = tmp_path / "bad"
    exp = build_malformed_corpus(src, bombs)
    m = prepare_dataset(src, tmp_path / "o", 64, workers=workers, progress=False)
    arr = np.load(tmp_path / "o" / "images.npy")
    skipped = {s["path"]: s["reason"] for s in m["skipped"]}
    assert m["files_seen"] == len(exp) == 22
    assert m["count"] + len(m["skipped"]) == m["files_seen"] == len(exp)
    assert arr.shape == (m["count"], 64, 64, 3)
    for rel, reason in exp.items():
        if reason is None:
            assert rel not in skipped, (rel, skipped.get(rel))
        else:
            assert reason in skipped.get(rel, ""), (rel, skipped.get(rel))
    assert all("\n" not in r for r in skipped.values())
    assert m["converted"] == {"CMYK": 1, "I;16": 1, "L": 1, "LA": 1, "P": 2, "RGBA": 1}
    row = rows_by_label(m, list(exp))
    px = {k: arr[v].reshape(-1, 3).mean(0) for k, v in row.items()}
    assert np.allclose(px["gray.jpg"], 100, atol=2)
    r, g, b = px["cmyk.jpg"]
    assert r > 230 and g < 25 and b < 25
    assert np.array_equal(px["rgba.png"], [255, 255, 255])  # transparent -> white background
    assert np.allclose(px["la.png"], 50 * 128 / 255 + 255 * (1 - 128 / 255), atol=1.5)
    assert np.array_equal(px["pal.png"], [0, 255, 0])
    assert np.array_equal(px["pal_trns.png"], [255, 255, 255])
    assert np.array_equal(px["i16.png"], [156, 156, 156])  # round(40000 * 255 / 65535), not clipped 255
    assert np.array_equal(arr[row["good.png"]], by_hand(Image.open(src / "good.png"), 64))
    assert np.array_equal(arr[row["good.webp"]], by_hand(Image.open(src / "good.webp"), 64))


def test_pixel_limit_is_configurable(tmp_path):
    save(tmp_path / "s" / "big.png", noise(200, 200))
    save(tmp_path / "s" / "small.png", noise(60, 60))
    m = prepare_dataset(tmp_path / "s", tmp_path / "o", 32, workers=1, progress=False, max_pixels=10_000)
    assert m["count"] == 1 and m["skipped"][0]["path"] == "big.png"
    assert "decompression bomb guard" in m["skipped"][0]["reason"]


def test_vanished_and_permission_denied(tmp_path, monkeypatch):
    src = tmp_path / "s"
    for name in ("a.jpg", "gone.jpg", "locked.jpg", "z.jpg"):
        save(src / name, noise(64, 64), "JPEG")
    real = prepare_workers.read_bytes

    def flaky(source, kind, name):
        if name == "gone.jpg":
            os.remove(os.path.join(source, name))  # disappears after the scan
        if name == "locked.jpg":
            raise PermissionError(13, "Permission denied", name)
        return real(source, kind, name)

    monkeypatch.setattr(prepare_workers, "read_bytes", flaky)
    m = prepare_dataset(src, tmp_path / "o", 32, workers=1, progress=False)
    reasons = {s["path"]: s["reason"] for s in m["skipped"]}
    assert reasons["gone.jpg"].startswith("vanished")
    assert reasons["locked.jpg"] == "permission denied"
    assert m["count"] == 2 and m["files_seen"] == 4


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root: chmod 000 does not block reads (covered by the monkeypatched test)",
)
def test_permission_denied_real_chmod(tmp_path):
    src = tmp_path / "s"
    save(src / "a.png", noise(64, 64))
    p = save(src / "b.png", noise(64, 64))
    p.chmod(0)
    try:
        m = prepare_dataset(src, tmp_path / "o", 32, workers=1, progress=False)
    finally:
        p.chmod(0o644)
    assert m["skipped"] == [{"path": "b.png", "reason": "permission denied"}]


# --------------------------------------------------------------------------- errors


def _assert_one_line(exc, *needles):
    msg = str(exc.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg


def test_input_errors(tmp_path):
    good = tmp_path / "good"
    save(good / "a.png", noise(64, 64))
    with pytest.raises(PrepareError) as e:
        prepare_dataset(tmp_path / "missing", tmp_path / "o", 64, progress=False)
    _assert_one_line(e, "source not found", "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(PrepareError) as e:
        prepare_dataset(tmp_path / "empty", tmp_path / "o", 64, progress=False)
    _assert_one_line(e, "no image files", "empty")
    with pytest.raises(PrepareError) as e:
        prepare_dataset(good / "a.png", tmp_path / "o", 64, progress=False)
    _assert_one_line(e, "neither a folder nor a .zip", "a.png")
    for bad in (0, -64, 100, 512, 16, True, "64", 64.0):
        with pytest.raises(PrepareError) as e:
            prepare_dataset(good, tmp_path / "o", bad, progress=False)
        _assert_one_line(e, "invalid size", repr(bad))
    for kw in ({"workers": 0}, {"min_side": 0}, {"max_pixels": -1}):
        with pytest.raises(PrepareError):
            prepare_dataset(good, tmp_path / "o", 64, progress=False, **kw)
    (tmp_path / "o").mkdir()
    with pytest.raises(PrepareError) as e:
        prepare_dataset(good, tmp_path / "o", 64, progress=False)
    _assert_one_line(e, "already exists", str(tmp_path / "o"))
    assert list((tmp_path / "o").iterdir()) == []
    assert no_temp_dirs(tmp_path)
    assert issubclass(PrepareError, ValueError) and issubclass(DatasetFormatError, ValueError)


def test_only_bad_files_is_an_error_and_writes_nothing(tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    (src / "zero.jpg").write_bytes(b"")
    (src / "text.jpg").write_text("hello")
    full = jpeg_bytes(noise(100, 100))
    (src / "trunc.jpg").write_bytes(full[:200])
    with pytest.raises(PrepareError) as e:
        prepare_dataset(src, tmp_path / "o", 64, workers=2, progress=False)
    _assert_one_line(e, "no usable images", "3 image file(s) seen", "truncated")
    assert not (tmp_path / "o").exists()
    assert no_temp_dirs(tmp_path)


def test_overwrite_is_atomic(tmp_path, monkeypatch):
    src = tmp_path / "s"
    save(src / "a.png", noise(64, 64, 1))
    save(src / "b.png", noise(64, 64, 2))
    out = tmp_path / "ds"
    first = prepare_dataset(src, out, 32, workers=1, progress=False)
    # a failure late in the run leaves the old dataset untouched and no temp dirs
    monkeypatch.setattr(P, "content_hash", lambda a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        prepare_dataset(src, out, 64, workers=1, progress=False, overwrite=True)
    monkeypatch.undo()
    assert load_manifest(out, verify=True)["content_hash"] == first["content_hash"]
    assert no_temp_dirs(tmp_path)
    second = prepare_dataset(src, out, 64, workers=1, progress=False, overwrite=True)
    assert load_manifest(out)["size"] == 64 and second["count"] == 2
    assert np.load(out / "images.npy").shape == (2, 64, 64, 3)
    assert no_temp_dirs(tmp_path)
    # overwrite refuses to delete a directory that is not a dataset
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.txt").write_text("do not delete")
    with pytest.raises(PrepareError) as e:
        prepare_dataset(src, other, 64, workers=1, progress=False, overwrite=True)
    _assert_one_line(e, "refusing to overwrite")
    assert (other / "thesis.txt").read_text() == "do not delete"


def test_load_manifest_errors(tmp_path):
    save(tmp_path / "s" / "a.png", noise(64, 64))
    out = tmp_path / "ds"
    prepare_dataset(tmp_path / "s", out, 32, workers=1, progress=False)
    with pytest.raises(DatasetFormatError, match="not found"):
        load_manifest(tmp_path / "nope")
    mtext = (out / "manifest.json").read_text()
    good = json.loads(mtext)
    cases = [
        ("{not json", "unreadable JSON"),
        (json.dumps({**good, "format": "other"}), "format"),
        (json.dumps({**good, "format_version": 99}), "unsupported format_version"),
        (json.dumps({k: v for k, v in good.items() if k != "count"}), "missing key"),
        (json.dumps({**good, "count": 2}), "does not match manifest"),
        (json.dumps({**good, "size": 64}), "does not match manifest"),
    ]
    for text, needle in cases:
        (out / "manifest.json").write_text(text)
        with pytest.raises(DatasetFormatError) as e:
            load_manifest(out)
        _assert_one_line(e, needle, "manifest.json" if needle != "does not match manifest" else "images.npy")
    (out / "manifest.json").write_text(mtext)
    arr = np.load(out / "images.npy")
    arr[0, 0, 0, 0] ^= 0xFF
    np.save(out / "images.npy", arr)
    load_manifest(out)  # shape still fine
    with pytest.raises(DatasetFormatError, match="content hash mismatch"):
        load_manifest(out, verify=True)
    (out / "images.npy").unlink()
    with pytest.raises(DatasetFormatError, match="images.npy: missing"):
        load_manifest(out)
    (out / "manifest.json").unlink()
    with pytest.raises(DatasetFormatError, match="manifest.json: missing"):
        load_manifest(out)


# --------------------------------------------------------------------------- more features


def test_multiple_sources_are_concatenated(tmp_path):
    save(tmp_path / "A" / "x.png", solid((200, 0, 0), (64, 64)))
    save(tmp_path / "A" / "y.png", solid((0, 200, 0), (64, 64)))
    (tmp_path / "A" / "bad.jpg").write_bytes(b"")
    zp = tmp_path / "B.zip"
    bio = io.BytesIO()
    solid((0, 0, 200), (64, 64)).save(bio, "PNG")
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("a.png", bio.getvalue())  # sorts before x.png, but comes from source 1
        zf.writestr("bad.jpg", b"nope")
    m = prepare_dataset([tmp_path / "A", zp], tmp_path / "o", 32, workers=2, progress=False)
    a = np.load(tmp_path / "o" / "images.npy")
    assert [tuple(r.reshape(-1, 3).mean(0).round()) for r in a] == [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    assert m["source"] == [str((tmp_path / "A").resolve()), str(zp.resolve())]
    assert m["source_kind"] == ["folder", "zip"]
    assert sorted(s["path"] for s in m["skipped"]) == ["0:bad.jpg", "1:bad.jpg"]
    assert [(s["files_seen"], s["count"]) for s in m["sources"]] == [(3, 2), (2, 1)]
    assert m["count"] + len(m["skipped"]) == m["files_seen"] == 5


def test_names_file_lists_each_rows_source_file(tmp_path):
    """names.txt: row i's file name, skipped files left out, sources in order; the same list the
    attribute code rebuilds from the manifest without it."""
    from fakefacegen.attributes import dataset_names

    save(tmp_path / "A" / "x.png", solid((200, 0, 0), (64, 64)))
    save(tmp_path / "A" / "sub" / "y.png", solid((0, 200, 0), (64, 64)))
    (tmp_path / "A" / "bad.jpg").write_bytes(b"")
    save(tmp_path / "B" / "a.png", solid((0, 0, 200), (64, 64)))
    m = prepare_dataset([tmp_path / "A", tmp_path / "B"], tmp_path / "o", 32, workers=1, progress=False)
    assert m["names_file"] == "names.txt"
    names = (tmp_path / "o" / "names.txt").read_text().splitlines()
    assert names == ["sub/y.png", "x.png", "a.png"]
    a = np.load(tmp_path / "o" / "images.npy")
    assert [tuple(r.reshape(-1, 3).mean(0).round()) for r in a] == [(0, 200, 0), (200, 0, 0), (0, 0, 200)]
    assert dataset_names(tmp_path / "o") == names
    (tmp_path / "o" / "names.txt").unlink()  # an older dataset: rebuilt from the sources, the same list
    assert dataset_names(tmp_path / "o") == names


@pytest.mark.skipif(os.name == "nt", reason="line breaks in a file name")
@pytest.mark.parametrize("name", ["two\nlines.png", "a\u2028b.png", "c\x85d.png", "e\x0cf.png"])
def test_names_file_not_written_for_a_name_that_is_not_one_line(tmp_path, name):
    """A line break, and what str.splitlines also splits on (U+2028, \\x85, \\x0c, ...), cannot stand in one
    line of names.txt: the file is left out and readers rebuild the names from the sources."""
    from fakefacegen.attributes import dataset_names

    save(tmp_path / "A" / "x.png", solid((200, 0, 0), (64, 64)))
    save(tmp_path / "A" / name, solid((0, 200, 0), (64, 64)))
    m = prepare_dataset(tmp_path / "A", tmp_path / "o", 32, workers=1, progress=False)
    assert m["count"] == 2 and m["names_file"] is None
    assert not (tmp_path / "o" / "names.txt").exists()
    assert dataset_names(tmp_path / "o") == sorted([name, "x.png"])  # rebuilt from the sources


@pytest.mark.skipif(sys.platform != "linux", reason="a file name that is not UTF-8 (Linux keeps its bytes)")
def test_a_file_name_that_is_not_utf8_does_not_break_prepare(tmp_path):
    """A name of bytes that are not UTF-8 (a surrogate in Python) cannot be written to names.txt: the
    dataset is still prepared, without names.txt, and its names rebuilt from the sources."""
    from fakefacegen.attributes import dataset_names

    (tmp_path / "A").mkdir()
    save(tmp_path / "A" / "x.png", solid((200, 0, 0), (64, 64)))
    odd = os.fsdecode(b"\xff.png")
    save(tmp_path / "A" / odd, solid((0, 200, 0), (64, 64)))
    m = prepare_dataset(tmp_path / "A", tmp_path / "o", 32, workers=1, progress=False)
    assert m["count"] == 2 and m["names_file"] is None
    assert not (tmp_path / "o" / "names.txt").exists()
    assert dataset_names(tmp_path / "o") == ["x.png", odd]


def test_overlapping_sources_are_refused_before_anything_is_written(tmp_path):
    save(tmp_path / "all" / "sub" / "x.png", solid((200, 0, 0), (64, 64)))
    save(tmp_path / "all" / "y.png", solid((0, 200, 0), (64, 64)))
    for srcs, msg in [
        ([tmp_path / "all", tmp_path / "all" / "sub"], r"sub is inside source .*all"),
        ([tmp_path / "all" / "sub", tmp_path / "all"], r"sub is inside source .*all"),
        ([tmp_path / "all", tmp_path / "all"], r"all is given twice"),
    ]:
        with pytest.raises(PrepareError, match=msg):
            prepare_dataset(srcs, tmp_path / "o", 32, workers=1, progress=False)
        assert not (tmp_path / "o").exists()
    # siblings are fine
    save(tmp_path / "other" / "z.png", solid((0, 0, 200), (64, 64)))
    m = prepare_dataset([tmp_path / "all", tmp_path / "other"], tmp_path / "o", 32, workers=1, progress=False)
    assert m["count"] == 3


def test_exif_orientation_applied(tmp_path):
    im = Image.new("RGB", (120, 160), (255, 0, 0))
    im.paste((0, 0, 255), (0, 80, 120, 160))  # top red, bottom blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 deg clockwise
    save(tmp_path / "s" / "r.jpg", im, "JPEG", exif=exif, quality=95)
    m = prepare_dataset(tmp_path / "s", tmp_path / "o", 32, workers=1, progress=False, draft=False)
    a = np.load(tmp_path / "o" / "images.npy")[0].astype(int)
    ref = by_hand(ImageOps.exif_transpose(Image.open(tmp_path / "s" / "r.jpg")), 32).astype(int)
    assert m["exif_transposed"] == 1
    assert np.abs(a - ref).max() <= 1
    assert a[:, :8, 2].mean() > 200 and a[:, -8:, 0].mean() > 200  # blue now left, red right


def test_default_min_side():
    assert P.default_min_side(32) == 8 and P.default_min_side(64) == 16 and P.default_min_side(256) == 64


@pytest.mark.shared
@pytest.mark.skipif(not CELEBA.is_dir(), reason=f"real data not present: {CELEBA}")
def test_real_celeba_subset(tmp_path):
    files = sorted(p for p in CELEBA.iterdir() if p.suffix == ".jpg")[:64]
    sub = tmp_path / "sub"
    sub.mkdir()
    for p in files:
        (sub / p.name).symlink_to(p)
    m = prepare_dataset(sub, tmp_path / "o", 64, workers=2, progress=False)
    a = np.load(tmp_path / "o" / "images.npy", mmap_mode="r")
    assert a.shape == (64, 64, 64, 3) and m["skipped"] == [] and m["draft_decoded"] == 64
    mean = a.reshape(-1, 3).mean(0)
    assert ((60 < mean) & (mean < 190)).all(), mean
    assert mean[0] > mean[2]  # faces: more red than blue
    assert a.reshape(64, -1).std(1).min() > 10  # no blank images
    ref = by_hand(Image.open(files[0]), 64).astype(int)
    assert np.abs(a[0].astype(int) - ref).mean() < 3


# --------------------------------------------------------------------------- full disk, killed writers


def _dead_pid() -> int:
    """The pid of a process that has exited (a killed writer's)."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_full_disk_is_refused_before_writing(tmp_path, monkeypatch, capsys):
    from fakefacegen.cli import main

    src = tmp_path / "s"
    for i in range(3):
        save(src / f"{i}.png", noise(64, 64, i))
    out = tmp_path / "ds"
    needed = 3 * 32 * 32 * 3 + (1 << 20)
    real = P.shutil.disk_usage
    calls = []

    def small_disk(path):
        calls.append(Path(path))
        return real(path)._replace(free=needed - 1)

    monkeypatch.setattr("shutil.disk_usage", small_disk)
    assert main(["prepare", str(src), "--out", str(out), "--size", "32", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0] == (
        f"error: {out}: not enough free disk space: 1.0 MiB needed ({needed} bytes), 1.0 MiB free "
        f"({needed - 1} bytes); the dataset was not written"
    )
    assert calls and calls[0].parent == tmp_path  # asked about the output's file system
    assert not out.exists() and no_temp_dirs(tmp_path)
    # exactly enough is enough
    monkeypatch.setattr("shutil.disk_usage", lambda path: real(path)._replace(free=needed))
    assert prepare_dataset(src, out, 32, workers=1, progress=False)["count"] == 3


@pytest.mark.parametrize("where", ["reserve", "manifest", "worker"])
def test_enospc_while_writing_is_one_line(tmp_path, monkeypatch, where):
    import errno

    from fakefacegen import atomic, dataset_format

    src = tmp_path / "s"
    for i in range(4):
        save(src / f"{i}.png", noise(64, 64, i))
    out = tmp_path / "ds"

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "reserve":  # the disk filled up between the check and the allocation
        monkeypatch.setattr(atomic.os, "posix_fallocate", full)
    elif where == "manifest":
        monkeypatch.setattr(P, "write_manifest", full)
    else:  # a decoded row that cannot be stored (as a memmap write to an unreserved file would)
        monkeypatch.setattr(prepare_workers, "decode_image", full)
        monkeypatch.setattr(prepare_workers, "process_one", full)
    with pytest.raises(OSError) as e:
        prepare_dataset(src, out, 32, workers=1, progress=False)
    assert e.value.errno == errno.ENOSPC
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{out}: not enough free disk space: ")
    assert f"needed ({4 * 32 * 32 * 3 + (1 << 20)} bytes)" in msg and msg.endswith("; the dataset was not written")
    assert not out.exists() and no_temp_dirs(tmp_path)
    assert dataset_format.dataset_bytes(4, 32) == 4 * 32 * 32 * 3 + (1 << 20)


def test_images_space_is_reserved_not_sparse(tmp_path):
    from fakefacegen.dataset_format import create_images

    path = create_images(tmp_path, 64, 32)
    st = os.stat(path)
    assert st.st_size == 128 + 64 * 32 * 32 * 3
    assert st.st_blocks * 512 >= 64 * 32 * 32 * 3  # allocated: a memmap write cannot hit a full disk


@pytest.mark.slow
def test_real_full_disk_tmpfs(tmp_path):
    """A 2 MiB file system (tests run as root here): a dataset that does not fit is refused with the
    one line; with the up-front check disabled the space reservation meets the full disk (where a
    memory-mapped write would die of SIGBUS) and gives the same line; nothing is left behind, and
    a dataset that fits is then written."""
    import subprocess
    import sys

    small = tmp_path / "small"
    small.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()})")
    try:
        src, few = tmp_path / "s", tmp_path / "few"
        for i in range(100):
            save(src / f"{i:03d}.png", noise(64, 64, i))
        for i in range(20):
            save(few / f"{i:03d}.png", noise(64, 64, i))
        out = small / "ds"
        needed = 100 * 64 * 64 * 3 + (1 << 20)

        def prepare_in_child(source: Path, *setup: str) -> list[str]:
            # a child process: a SIGBUS would kill it (rc -7), not the test
            code = "import sys; " + "".join(setup)
            code += "from fakefacegen.cli import main; sys.exit(main(sys.argv[1:]))"
            argv = ["prepare", str(source), "--out", str(out), "--size", "64", "--quiet", "--workers", "2"]
            r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
            assert r.returncode == 2, (r.returncode, r.stderr)
            return r.stderr.strip().splitlines()

        err = prepare_in_child(src)
        assert len(err) == 1 and err[0].startswith(f"error: {out}: not enough free disk space: "), err
        assert f"needed ({needed} bytes)" in err[0] and err[0].endswith("; the dataset was not written")
        assert list(small.iterdir()) == []
        (small / "filler").write_bytes(b"\0" * (1 << 20))  # 1 MiB left: the 1.2 MB of pixels do not fit
        err = prepare_in_child(src, "import fakefacegen.prepare as P; P.check_space = lambda *a: None; ")
        assert len(err) == 1 and err[0].startswith(f"error: {out}: not enough free disk space: "), err
        assert sorted(p.name for p in small.iterdir()) == ["filler"]
        (small / "filler").unlink()
        m = prepare_dataset(few, out, 64, workers=1, progress=False)
        assert m["count"] == 20 and load_manifest(out, verify=True)["count"] == 20
        assert sorted(p.name for p in small.iterdir()) == ["ds"]
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


def test_leftovers_of_killed_prepares_are_cleaned_up(tmp_path, capsys):
    from fakefacegen.dataset_format import write_dataset

    src = tmp_path / "s"
    save(src / "a.png", noise(64, 64, 1))
    out = tmp_path / "ds"
    dead, live = _dead_pid(), os.getpid()
    stale = tmp_path / f".ds.{dead}.tmp-abc123"
    stale.mkdir()
    (stale / "images.npy").write_bytes(b"\0" * 4096)  # a half-written array
    mine = tmp_path / f".ds.{live}.tmp-inuse1"  # a live writer's: left alone
    mine.mkdir()
    legacy = tmp_path / ".ds.tmp-old4567"  # an older version's (no pid): ignored, with a note
    legacy.mkdir()
    (legacy / "images.npy").write_bytes(b"\0" * 100)
    other = tmp_path / f".other.{dead}.tmp-xyz"  # another dataset's: not ours to judge
    other.mkdir()
    m = prepare_dataset(src, out, 32, workers=1, progress=False)
    assert m["count"] == 1
    err = capsys.readouterr().err
    assert f"note: {stale}: removed (left by a writer of ds that was killed, pid {dead})" in err
    assert f"note: {legacy} was left by a prepare that was killed (an older version); it is ignored: " in err
    assert "delete it to free 100 bytes" in err
    assert not stale.exists() and mine.is_dir() and legacy.is_dir() and other.is_dir()
    mine.rmdir()
    # killed inside publish, after the old dataset was moved aside and before the new one took its
    # place: the next writer of that destination puts the old one back first
    aside = tmp_path / f".ds.{dead}.old-q1w2e3"
    aside.mkdir()
    os.replace(out, aside / "d")
    write_dataset(tmp_path / "x", np.zeros((1, 32, 32, 3), np.uint8))  # another destination: no effect
    assert not out.exists() and aside.exists()
    with pytest.raises(PrepareError, match="output already exists"):  # it is back, so not replaced without --overwrite
        prepare_dataset(src, out, 64, workers=1, progress=False)
    err = capsys.readouterr().err
    assert f"note: {out}: put back (a writer replacing it was killed after moving it aside to {aside})" in err
    assert not aside.exists() and load_manifest(out, verify=True)["size"] == 32
    prepare_dataset(src, out, 64, workers=1, progress=False, overwrite=True)
    assert load_manifest(out)["size"] == 64 and no_temp_dirs(tmp_path) is False  # the legacy one stays


@pytest.mark.slow
def test_prepare_killed_at_random_points_never_breaks_the_next(tmp_path):
    import random
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "s"
    for i in range(300):
        save(src / f"{i:03d}.png", noise(96, 96, i))
    out = tmp_path / "ds"
    rng = random.Random(7)
    argv = [sys.executable, "-m", "fakefacegen", "prepare", str(src), "--out", str(out), "--size", "64", "--quiet"]

    def start() -> tuple[subprocess.Popen, float]:
        """A prepare process, once its temporary directory exists (the time then)."""
        # its own process group, so that a kill takes its worker processes too (as a power cut would)
        p = subprocess.Popen([*argv, "--overwrite", "--workers", "2"], stderr=subprocess.PIPE, start_new_session=True)
        t0 = time.monotonic()
        while not any(".tmp-" in q.name for q in tmp_path.iterdir()) and p.poll() is None:
            if time.monotonic() - t0 > 60:
                break
            time.sleep(0.005)
        return p, time.monotonic()

    # The kill points are drawn within the time an uninterrupted run writes (measured here, so that a
    # fast CPU, which writes the 300 faces in a tenth of a second, is killed mid-write as a slow one is).
    p, t_tmp = start()
    assert p.wait(timeout=300) == 0
    p.stderr.close()
    work = time.monotonic() - t_tmp
    assert no_temp_dirs(tmp_path) and load_manifest(out, verify=True)["count"] == 300
    kills = left = 0
    for _ in range(4):
        p, _ = start()
        time.sleep(rng.uniform(0.0, 0.8 * work))
        os.killpg(p.pid, signal.SIGKILL)
        kills += p.wait() == -signal.SIGKILL
        p.stderr.close()
        left += not no_temp_dirs(tmp_path)
        if out.exists():  # a dataset in place is always complete
            load_manifest(out, verify=True)
    assert kills >= 3 and left >= 2, (kills, left)
    r = subprocess.run([*argv, "--overwrite"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert load_manifest(out, verify=True)["count"] == 300
    assert no_temp_dirs(tmp_path), list(tmp_path.iterdir())
