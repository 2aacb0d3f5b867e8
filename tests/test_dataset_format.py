"""Tests for fakefacegen.dataset_format: round trip, atomic replacement, and one-line errors for bad files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from fakefacegen import dataset_format as F
from fakefacegen.dataset_format import DatasetFormatError


def images(n: int = 5, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def one_line_error(fn, *needles: str) -> str:
    with pytest.raises(DatasetFormatError) as ei:
        fn()
    msg = str(ei.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


def test_round_trip(tmp_path):
    arr = images()
    m = F.write_dataset(tmp_path / "ds", arr, source="unit test")
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == [F.IMAGES_FILE, F.MANIFEST_FILE]
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no staging directory left behind
    assert m["format"] == F.FORMAT_NAME and m["format_version"] == F.FORMAT_VERSION
    assert m["count"] == 5 and m["size"] == 8 and m["source"] == "unit test"
    assert m["content_hash"] == hashlib.sha256(arr.tobytes()).hexdigest() == F.content_hash(arr)
    assert F.load_manifest(tmp_path / "ds", verify=True) == m
    manifest, loaded = F.open_dataset(tmp_path / "ds")
    assert manifest == m and isinstance(loaded, np.memmap) and np.array_equal(loaded, arr)
    assert np.array_equal(F.load_images(tmp_path / "ds", mmap_mode=None), arr)
    assert F.is_dataset_dir(tmp_path / "ds") and F.is_fakefacegen_dataset(tmp_path / "ds")
    assert not F.is_dataset_dir(tmp_path) and not F.is_fakefacegen_dataset(tmp_path)


def test_content_hash_streams_in_row_order():
    arr = images(n=F._HASH_ROWS + 3, size=2)
    assert F.content_hash(arr) == hashlib.sha256(arr.tobytes()).hexdigest()


def test_replaces_a_dataset_but_not_other_directories(tmp_path):
    out = tmp_path / "ds"
    F.write_dataset(out, images(seed=1))
    second = F.write_dataset(out, images(n=3, seed=2))
    assert F.load_manifest(out, verify=True) == second and second["count"] == 3
    (tmp_path / "empty").mkdir()
    F.write_dataset(tmp_path / "empty", images())
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    one_line_error(lambda: F.write_dataset(precious, images()), str(precious), "not replaced")
    assert (precious / "notes.txt").read_text() == "keep me"
    one_line_error(lambda: F.write_dataset(tmp_path / "bad", images()[..., :2]), "expected uint8 (N, S, S, 3)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "empty", "precious"]


def test_keep_rows_compacts_in_place(tmp_path):
    arr = images(n=10, size=4)
    path = F.create_images(tmp_path, 10, 4)
    mm = np.load(path, mmap_mode="r+")
    mm[:] = arr
    mm.flush()
    del mm
    keep = np.array([0, 2, 3, 4, 8])
    F.keep_rows(path, keep, 4)
    assert np.array_equal(np.load(path), arr[keep])


def test_truncated_images_give_one_line_naming_the_file(tmp_path):
    ds = tmp_path / "ds"
    F.write_dataset(ds, images())
    ipath = ds / F.IMAGES_FILE
    ipath.write_bytes(ipath.read_bytes()[:-10])
    one_line_error(lambda: F.load_manifest(ds), str(ipath), "truncated")
    one_line_error(lambda: F.open_dataset(ds), str(ipath), "truncated")
    ipath.write_bytes(b"garbage")
    one_line_error(lambda: F.load_manifest(ds), str(ipath), "not a valid .npy file")
    one_line_error(lambda: F.map_images(ds), str(ipath), "cannot read the image array")
    ipath.unlink()
    one_line_error(lambda: F.load_manifest(ds), str(ipath), "missing")


@pytest.mark.parametrize(
    "text, needle",
    [
        ("{not json", "unreadable JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"format": "fakefacegen-dataset"}', "missing key(s) format_version, count, size, content_hash"),
    ],
)
def test_malformed_manifest_gives_one_line_naming_the_file(tmp_path, text, needle):
    ds = tmp_path / "ds"
    F.write_dataset(ds, images())
    mpath = ds / F.MANIFEST_FILE
    mpath.write_text(text)
    one_line_error(lambda: F.load_manifest(ds), str(mpath), needle)
    # replaceable (by prepare --overwrite) only while the manifest still names the format
    assert F.is_fakefacegen_dataset(ds) == ("fakefacegen-dataset" in text)


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("format", "something-else", "format is 'something-else'"),
        ("format_version", 99, "unsupported format_version 99"),
        ("count", -1, "invalid count/size"),
        ("count", 4, "does not match manifest"),
        ("size", 16, "does not match manifest"),
    ],
)
def test_manifest_fields_are_checked(tmp_path, field, value, needle):
    ds = tmp_path / "ds"
    m = F.write_dataset(ds, images())
    (ds / F.MANIFEST_FILE).write_text(json.dumps({**m, field: value}))
    one_line_error(lambda: F.load_manifest(ds), needle)


def test_verify_detects_changed_pixels(tmp_path):
    ds = tmp_path / "ds"
    arr = images()
    F.write_dataset(ds, arr)
    arr[0, 0, 0, 0] ^= 1
    np.save(ds / F.IMAGES_FILE, arr)
    F.load_manifest(ds)  # the shape still matches
    one_line_error(lambda: F.load_manifest(ds, verify=True), "content hash mismatch")


def test_missing_directory_and_manifest(tmp_path):
    one_line_error(lambda: F.load_manifest(tmp_path / "nope"), "dataset directory not found", str(tmp_path / "nope"))
    one_line_error(lambda: F.read_manifest(tmp_path), str(Path(tmp_path) / F.MANIFEST_FILE), "missing")


def test_map_images_is_lenient_about_the_manifest(tmp_path):
    np.save(tmp_path / F.IMAGES_FILE, images(n=2, size=3))
    assert F.map_images(tmp_path).shape == (2, 3, 3, 3)
    np.save(tmp_path / F.IMAGES_FILE, np.zeros((2, 3, 3), np.uint8))
    one_line_error(lambda: F.map_images(tmp_path), "expected uint8 (N, S, S, 3)")


def test_one_line():
    assert F.one_line("a\n  b\tc") == "a b c"
    assert F.one_line("x" * 300, 20) == "x" * 17 + "..."
