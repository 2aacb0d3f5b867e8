"""Bad input images the malformed-input corpus of test_prepare.py does not cover: 16-bit colour
PNGs (with and without alpha), a JPEG whose header claims 900 megapixels, bad members inside a
zip, and a damaged zip archive. Every file is used correctly or skipped and listed, and the
counts add up."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from fakefacegen.prepare import PrepareError, prepare_dataset


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png16(arr: np.ndarray, color_type: int) -> bytes:
    """A 16-bit-per-channel PNG written by hand (Pillow cannot write 16-bit colour)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def jpeg(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "JPEG", quality=95)
    return b.getvalue()


def test_16bit_colour_and_huge_header(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rgb = np.zeros((64, 64, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 40000, 256
    (src / "rgb16.png").write_bytes(png16(rgb, 2))
    rgba = np.zeros((64, 64, 4), np.uint16)
    rgba[..., 0], rgba[..., 3] = 65535, 65535  # opaque red
    (src / "rgba16.png").write_bytes(png16(rgba, 6))
    rgba_clear = rgba.copy()
    rgba_clear[..., 3] = 0  # fully transparent -> the white background
    (src / "rgba16_clear.png").write_bytes(png16(rgba_clear, 6))
    la = np.zeros((64, 64, 2), np.uint16)
    la[..., 0], la[..., 1] = 40000, 65535
    (src / "la16.png").write_bytes(png16(la, 4))
    Image.new("L", (64, 64), 77).save(src / "gray8.png")
    # a JPEG whose frame header claims 30000 x 30000 (900 MP) on a few hundred bytes of data
    j = bytearray(jpeg(Image.new("RGB", (64, 64), (10, 20, 30))))
    sof = j.find(b"\xff\xc0")
    j[sof + 5 : sof + 9] = struct.pack(">HH", 30000, 30000)
    (src / "header_bomb.jpg").write_bytes(bytes(j))

    m = prepare_dataset(src, tmp_path / "out", 32, workers=1, progress=False)
    arr = np.load(tmp_path / "out" / "images.npy")
    assert m["files_seen"] == 6 and m["count"] + len(m["skipped"]) == m["files_seen"]
    assert [s["path"] for s in m["skipped"]] == ["header_bomb.jpg"]
    assert "decompression bomb" in m["skipped"][0]["reason"]
    used = sorted(p.name for p in src.iterdir() if p.name != "header_bomb.jpg")
    mean = {name: arr[i].reshape(-1, 3).mean(0) for i, name in enumerate(used)}
    # independent expectation: 16-bit v -> 8-bit v * 255 / 65535 (within 1 level for any rounding rule)
    assert np.allclose(mean["rgb16.png"], [255, 40000 * 255 / 65535, 256 * 255 / 65535], atol=1)
    assert np.allclose(mean["rgba16.png"], [255, 0, 0], atol=1)
    assert np.allclose(mean["rgba16_clear.png"], [255, 255, 255], atol=1)
    assert np.allclose(mean["la16.png"], 40000 * 255 / 65535, atol=1)
    assert np.allclose(mean["gray8.png"], 77, atol=0.5)


def test_bad_members_inside_a_zip(tmp_path):
    good = jpeg(Image.new("RGB", (64, 64), (200, 100, 50)))
    zp = tmp_path / "faces.zip"
    bomb = bytearray(good)
    sof = bomb.find(b"\xff\xc0")
    bomb[sof + 5 : sof + 9] = struct.pack(">HH", 30000, 30000)
    expected = {
        "empty.jpg": "empty file",
        "truncated.jpg": "truncated",
        "text.jpg": "not a JPEG/PNG/WebP",
        "dir/bomb.jpg": "decompression bomb",
        "tiny.png": "too small",
    }
    tiny = io.BytesIO()
    Image.new("RGB", (1, 1)).save(tiny, "PNG")
    with zipfile.ZipFile(zp, "w") as z:
        z.writestr("a.jpg", good)
        z.writestr("dir/b.jpg", good)
        z.writestr("empty.jpg", b"")
        z.writestr("truncated.jpg", good[: len(good) // 3])
        z.writestr("text.jpg", b"not an image\n" * 40)
        z.writestr("dir/bomb.jpg", bytes(bomb))
        z.writestr("tiny.png", tiny.getvalue())
        z.writestr("readme.txt", b"ignored: not an image name")
    m = prepare_dataset(zp, tmp_path / "out", 32, workers=1, progress=False)
    reasons = {s["path"]: s["reason"] for s in m["skipped"]}
    assert m["count"] == 2 and m["files_seen"] == 7 and m["count"] + len(reasons) == m["files_seen"]
    assert set(reasons) == set(expected)
    for name, why in expected.items():
        assert why in reasons[name] and "\n" not in reasons[name], (name, reasons[name])
    arr = np.load(tmp_path / "out" / "images.npy")
    assert np.allclose(arr.reshape(-1, 3).mean(0), [200, 100, 50], atol=3)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_zip_archive_is_a_one_line_error(tmp_path, damage):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        z.writestr("a.jpg", jpeg(Image.new("RGB", (64, 64))))
    data = b.getvalue()
    zp = tmp_path / "faces.zip"
    zp.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(PrepareError) as e:
        prepare_dataset(zp, tmp_path / "out", 32, workers=1, progress=False)
    assert str(zp) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces.zip"]
