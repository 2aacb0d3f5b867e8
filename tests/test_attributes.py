"""Attribute labels and the attribute classifier: CelebA's labels file, the names of a prepared dataset's
faces (names.txt, or rebuilt as prepare orders the files), the held-out split and report, and a
classifier that learns a planted attribute; one-line errors naming the file and line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import SHARED
from fakefacegen.attributes import (
    AttributeClassifier,
    AttributeDataError,
    AttributeNet,
    _auc,
    dataset_names,
    held_out_mask,
    held_out_report,
    labelled_faces,
    load_classifier,
    read_labels,
    train_classifier,
)

LABELS = SHARED / "data" / "celeba_labels" / "list_attr_celeba.txt"


def write_labels(path: Path, attrs: list[str], rows: dict[str, list[int]], count: int | None = None) -> Path:
    lines = [str(count if count is not None else len(rows)), " ".join(attrs)]
    lines += [f"{name} " + " ".join(f"{v:2d}" for v in vals) for name, vals in rows.items()]
    path.write_text("\n".join(lines))  # no final newline, like the shared file
    return path


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda a: st.lists(st.lists(st.sampled_from([1, -1]), min_size=a, max_size=a), min_size=1, max_size=20)
    )
)
def test_labels_round_trip(tmp_path_factory, rows):
    attrs = [f"A{j}" for j in range(len(rows[0]))]
    path = write_labels(
        tmp_path_factory.mktemp("l") / "l.txt", attrs, {f"{i:06d}.jpg": r for i, r in enumerate(rows)}, 202599
    )
    lab = read_labels(path)
    assert lab.attributes == attrs and lab.files == [f"{i:06d}.jpg" for i in range(len(rows))]
    np.testing.assert_array_equal(lab.values, np.array(rows) > 0)


@pytest.mark.parametrize(
    "body, message",
    [
        ("2\nA B\nx.jpg 1 -1\ny.jpg 1\n", "line 4 has 1 values, expected 2"),
        ("2\nA B\nx.jpg 1 0\n", "line 3 has a value that is not 1 or -1"),
        ("2\nA B\nx.jpg 1 yes\n", "line 3 has a value that is not 1 or -1"),
        ("2\nA B\nx.jpg 1 1\nx.jpg 1 1\n", "a file name appears on more than one line"),
        ("A B\nx.jpg 1 1\n", "not a CelebA attributes file"),
        ("2\nA A\nx.jpg 1 1\n", "line 2 must name each attribute once"),
    ],
)
def test_malformed_labels_are_one_line_errors_naming_the_line(tmp_path, body, message):
    p = tmp_path / "labels.txt"
    p.write_text(body)
    with pytest.raises(AttributeDataError, match=f"^--labels {p}: .*{message}"):
        read_labels(p)


def test_missing_labels_file(tmp_path):
    with pytest.raises(AttributeDataError, match=f"--labels {tmp_path / 'no.txt'}: cannot read it"):
        read_labels(tmp_path / "no.txt")


def _photos(folder: Path, names: list[str], seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for n in names:
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / n)


def _prepare(sources, out: Path) -> Path:
    from fakefacegen.prepare import prepare_dataset

    prepare_dataset(sources, out, 32, workers=1, progress=False)
    return out


def test_names_rebuilt_from_the_sources_in_prepares_order(tmp_path):
    _photos(tmp_path / "a", ["000003.png", "000001.png"])
    _photos(tmp_path / "a" / "sub", ["000002.png"])
    _photos(tmp_path / "b", ["000009.png", "000004.png"], seed=1)
    (tmp_path / "b" / "000005.png").write_bytes(b"")  # skipped by prepare (zero bytes)
    ds = _prepare([tmp_path / "a", tmp_path / "b"], tmp_path / "ds")
    names = dataset_names(ds)
    assert names == ["000001.png", "000003.png", "sub/000002.png", "000004.png", "000009.png"]
    images = np.load(ds / "images.npy")
    src = np.asarray(Image.open(tmp_path / "b" / "000009.png").resize((32, 32), Image.Resampling.LANCZOS))
    assert np.abs(images[4].astype(int) - src).mean() < np.abs(images[3].astype(int) - src).mean()


def test_names_file_wins_and_must_match_the_count(tmp_path):
    _photos(tmp_path / "a", ["000001.png", "000002.png"])
    ds = _prepare(tmp_path / "a", tmp_path / "ds")
    (ds / "names.txt").write_text("x/000007.jpg\nx/000008.jpg\n")
    assert dataset_names(ds) == ["x/000007.jpg", "x/000008.jpg"]
    (ds / "names.txt").write_text("000007.jpg\n")
    with pytest.raises(AttributeDataError, match=r"names.txt: 1 names for the dataset's 2 faces"):
        dataset_names(ds)


def test_sources_changed_since_prepare_is_a_one_line_error(tmp_path):
    _photos(tmp_path / "a", ["000001.png", "000002.png"])
    ds = _prepare(tmp_path / "a", tmp_path / "ds")
    _photos(tmp_path / "a", ["000000.png"], seed=3)
    assert dataset_names(ds) == ["000001.png", "000002.png"]  # names.txt, written by prepare, is the record
    (ds / "names.txt").unlink()  # a dataset prepared before names.txt: rebuilt from the sources, which changed
    with pytest.raises(
        AttributeDataError, match=r"sources now list 3 files \(3 usable\) where prepare saw 2 \(2 faces\)"
    ):
        dataset_names(ds)
    m = json.loads((ds / "manifest.json").read_text())
    del m["sources"]
    (ds / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(AttributeDataError, match="no names.txt and no 'sources' in manifest.json"):
        dataset_names(ds)


def test_labelled_faces_join_by_file_name(tmp_path):
    _photos(tmp_path / "a", ["000001.png", "000002.png", "000003.png"])
    ds = _prepare(tmp_path / "a", tmp_path / "ds")
    lab = read_labels(
        write_labels(
            tmp_path / "l.txt", ["A", "B"], {"000003.png": [1, -1], "000001.png": [-1, 1], "000099.png": [1, 1]}
        )
    )
    faces = labelled_faces(ds, lab)
    assert faces.ids == ["000001.png", "000003.png"]
    np.testing.assert_array_equal(faces.values, [[False, True], [True, False]])
    np.testing.assert_array_equal(faces.images, np.load(ds / "images.npy")[[0, 2]])
    none = read_labels(write_labels(tmp_path / "m.txt", ["A"], {"x.jpg": [1]}))
    with pytest.raises(AttributeDataError, match="none of its 3 faces has a row in the labels file"):
        labelled_faces(ds, none)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from([f"{i:06d}.jpg" for i in range(40)]), min_size=1, max_size=80), st.floats(0.05, 0.95))
def test_held_out_split_keeps_an_id_on_one_side(ids, fraction):
    m = held_out_mask(ids, fraction)
    side = {}
    for i, held in zip(ids, m):
        assert side.setdefault(i, held) == held
    assert sum(side.values()) == round(fraction * len(set(ids)))
    np.testing.assert_array_equal(m, held_out_mask(list(ids), fraction))  # seeded


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=30))
def test_auc_is_the_share_of_correctly_ordered_pairs(pairs):
    score = np.array([p[0] for p in pairs], float)
    y = np.array([p[1] for p in pairs])
    pos, neg = score[y], score[~y]
    if len(pos) == 0 or len(neg) == 0:
        assert np.isnan(_auc(score, y))
        return
    want = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
    assert _auc(score, y) == pytest.approx(want)


def test_held_out_report_figures():
    prob = np.array([[0.9], [0.8], [0.2], [0.1], [0.6]])
    y = np.array([[True], [False], [False], [False], [False]])
    r = held_out_report(prob, y, ["A"])["A"]
    assert r == {"accuracy": 0.6, "majority": 0.8, "balanced_accuracy": 0.75, "auc": 1.0, "positives": 0.2}


def planted(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Faces whose attribute 'Left' is 'the left half is brighter', 'Red' is 'red channel high'."""
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 140, (n, 64, 64, 3)).astype(np.int16)
    left = rng.random(n) < 0.5
    red = rng.random(n) < 0.3
    img[left, :, :32] += 80
    img[red, :, :, 0] += 100
    return np.clip(img, 0, 255).astype(np.uint8), np.stack([left, red], 1)


@pytest.mark.slow
def test_classifier_learns_planted_attributes_and_round_trips(tmp_path):
    from fakefacegen.attributes import LabelledFaces

    img, y = planted(480)
    faces = LabelledFaces(img, y, [f"{i:06d}.jpg" for i in range(len(img))], ["Left", "Red"])
    clf = train_classifier(faces, epochs=3, batch_size=32, held_out=0.25)
    assert clf.report["_"]["held_out_faces"] == 120 and clf.report["_"]["train_faces"] == 360
    for a in ("Left", "Red"):
        assert clf.report[a]["accuracy"] > 0.9 > clf.report[a]["majority"] - 0.2, clf.report[a]
    clf.save(tmp_path / "c.safetensors")
    back = load_classifier(tmp_path / "c.safetensors")
    assert back.attributes == ["Left", "Red"] and back.report == json.loads(json.dumps(clf.report))
    test_img, test_y = planted(64, seed=5)
    p = back.probabilities(test_img)
    assert p.shape == (64, 2) and p.dtype == np.float32
    assert ((p >= 0.5) == test_y).mean() > 0.9
    np.testing.assert_allclose(p, clf.probabilities(test_img), atol=2e-2)  # fp16 weights on disk
    small = back.probabilities(np.stack([np.asarray(Image.fromarray(a).resize((32, 32))) for a in test_img]))
    assert ((small >= 0.5) == test_y).mean() > 0.8  # other sizes are resized to 64 px


def test_not_a_classifier_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(AttributeDataError, match=f"^--classifier {bad}: not a readable classifier file"):
        load_classifier(bad)
    from safetensors.torch import save_file

    save_file(AttributeNet(2).state_dict(), str(bad))
    with pytest.raises(AttributeDataError, match="not a FakeFaceGen attribute classifier"):
        load_classifier(bad)


def test_shipped_classifier_beats_the_majority_class_where_it_is_offered():
    from fakefacegen.directions import MIN_AUC, REQUIRED

    clf = load_classifier()
    assert isinstance(clf, AttributeClassifier) and len(clf.attributes) == 40
    assert clf.report["_"]["held_out_faces"] > 1000
    for a in REQUIRED:
        r = clf.report[a]
        assert r["auc"] >= MIN_AUC and r["accuracy"] > r["majority"], (a, r)
    assert clf.probabilities(np.zeros((2, 64, 64, 3), np.uint8)).shape == (2, 40)


@pytest.mark.slow
@pytest.mark.skipif(not LABELS.is_file(), reason=f"{LABELS} absent")
def test_the_shared_labels_file():
    lab = read_labels(LABELS)
    assert len(lab.files) == 20_000 and len(lab.attributes) == 40
    assert lab.files[0] == "000001.jpg" and lab.attributes[31] == "Smiling"
    assert 0.45 < lab.values[:, lab.attributes.index("Smiling")].mean() < 0.5
