"""`fakefacegen compare`: three really trained debug runs (different recipes and budgets) -> HTML report,
summary.json and summary.md; numbers checked against the logs, images decoded, errors named."""

from __future__ import annotations

import argparse
import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import make_dataset_dir
from fakefacegen.commands.compare import register
from fakefacegen.compare import CompareError, compare_runs, load_run, summarize

# name -> overrides of the debug preset (8 steps, batch 8); "hinge" trains longer: a different budget.
RUNS = {
    "base": [],
    "ema-aug": ["train.ema=0.9", "train.augment=color,translation"],
    "hinge": ["train.loss=hinge", "train.steps=12"],
}
# Fake eval records (no Inception here): "ema-aug" has the best best-FID, "hinge" the best final FID,
# "base" none at all. KID is logged as a number with kid_std, or as a [mean, std] list.
EVALS = {
    "ema-aug": [(4, 80.0, 0.09), (6, 60.0, 0.05), (8, 70.0, 0.07)],
    "hinge": [(6, 90.0, 0.08), (12, 65.0, 0.06)],
}


# Every test reads the module's three debug-preset training runs (seconds to make): all are slow.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    from fakefacegen.config import make_config
    from fakefacegen.train import Trainer

    root = tmp_path_factory.mktemp("compare")
    data = make_dataset_dir(root / "ds32", n=64, size=32)
    out = {}
    threads = torch.get_num_threads()
    mp = pytest.MonkeyPatch()
    # The trainer's own losses.png (matplotlib, per grid) is not what compare reads; skip drawing it.
    mp.setattr("fakefacegen.train.plot_run", lambda run_dir: [])
    try:
        for name, overrides in RUNS.items():
            # One thread: on a loaded 2-core machine two threads spin against each other (5x slower).
            # Grids at step 0 and at the end only: a grid also redraws losses.png, which costs more than a step.
            cfg = make_config("debug", ["train.threads=1", "train.sample_every=1000", *overrides], data=str(data))
            out[name] = Trainer(cfg, outdir=root / "runs", name=name, progress=False).run()
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    for name, recs in EVALS.items():
        with open(out[name] / "log.jsonl", "a") as f:
            for step, fid, kid in recs:
                rec = {"kind": "eval", "step": step, "images_seen": 8 * step, "fid": fid, "n": 16}
                if name == "hinge":
                    rec["kid"] = [kid, kid / 10]
                else:
                    rec["kid"], rec["kid_std"] = kid, kid / 10
                f.write(json.dumps(rec) + "\n")
    # An `evaluate --out` result for one run (the eval-*.json convention).
    (out["hinge"] / "eval-10k.json").write_text(
        json.dumps({"fid": 42.5, "kid": 0.031, "kid_std": 0.002, "n_real": 10000, "n_fake": 10000})
    )
    return out


def run_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fakefacegen")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return args.func(args)


def log_records(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["kind"] == kind]


class Page(HTMLParser):
    """The bits of the report a test looks at: table rows (attrs, cells), images, text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.imgs: list[str] = []
        self.text: list[str] = []
        self._cell: dict | None = None
        self._row: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append({"class": a.get("class"), "head": [], "rows": []})
        elif tag == "tr":
            self._row = {"attrs": a, "cells": []}
        elif tag in ("td", "th"):
            self._cell = {"tag": tag, "attrs": a, "text": ""}
        elif tag == "img":
            self.imgs.append(a["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row["cells"].append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            t = self.tables[-1]
            if all(c["tag"] == "th" for c in self._row["cells"]):
                t["head"] = [c["text"] for c in self._row["cells"]]
            else:
                t["rows"].append(self._row)
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell["text"] += data


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report"
    assert run_cli(["compare", *map(str, runs.values()), "--out", str(out)]) == 0
    return out


def test_html_report(runs, report):
    page = Page()
    page.feed((report / "index.html").read_text())
    page.close()
    text = "".join(page.text)
    names = {k: p.name for k, p in runs.items()}  # 00001-base, ...: the run directories' names
    for name in names.values():
        assert name in text
    # No external resources and no script: it must stand alone.
    raw = (report / "index.html").read_text()
    assert "<script" not in raw and "http://" not in raw and "https://" not in raw

    results = next(t for t in page.tables if t["class"] == "results")
    rows = {k: r for r in results["rows"] for k, n in names.items() if r["attrs"]["data-run"] == n}
    assert len(rows) == len(results["rows"]) == len(RUNS)
    diff_col = results["head"].index("config diff vs baseline")
    assert rows["base"]["cells"][diff_col]["text"] == "baseline"
    assert "train.ema=0.9" in rows["ema-aug"]["cells"][diff_col]["text"]
    assert "train.augment=color,translation" in rows["ema-aug"]["cells"][diff_col]["text"]
    assert "train.loss=hinge" in rows["hinge"]["cells"][diff_col]["text"]
    assert "train.steps=12" in rows["hinge"]["cells"][diff_col]["text"]
    config = next(t for t in page.tables if t["class"] == "config")
    keys = {r["cells"][0]["text"]: [c["text"] for c in r["cells"][1:]] for r in config["rows"]}
    assert keys["train.loss"] == ["bce", "bce", "hinge"] and keys["train.ema"] == ["0.0", "0.9", "0.0"]

    # Final FID per run from the logs; the highlighted row is the lowest, rows ascend, no-FID run last.
    final_fid = {n: log_records(p, "eval")[-1]["fid"] for n, p in runs.items() if log_records(p, "eval")}
    col = results["head"].index("final FID")
    order = [r["attrs"]["data-run"] for r in results["rows"]]
    values = [r["cells"][col]["attrs"].get("data-value") for r in results["rows"]]
    assert [float(v) for v in values[:2]] == sorted(final_fid.values()) and values[2] is None
    assert order[-1] == names["base"]
    best = [r["attrs"]["data-run"] for r in results["rows"] if r["attrs"].get("class") == "best"]
    assert best == [names[min(final_fid, key=final_fid.get)]] == [names["hinge"]]
    assert "★" in rows["hinge"]["cells"][0]["text"]

    # Embedded images decode; the grids are byte-for-byte the runs' last fakes grid, never real.png.
    decoded = []
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1])
        Image.open(io.BytesIO(data)).verify()
        decoded.append(data)
    assert len(decoded) == 2 + len(RUNS)  # losses, metrics, one grid per run
    for p in runs.values():
        last = sorted((p / "samples").glob("fakes-*.png"))[-1].read_bytes()
        assert last in decoded
        assert (p / "samples" / "real.png").read_bytes() not in decoded
    real = {(p / "samples" / "real.png").read_bytes() for p in runs.values()}
    for f in report.glob("*.png"):
        assert f.read_bytes() not in real
        Image.open(f).verify()
    assert {"losses.png", "metrics.png", "grids.png"} <= {f.name for f in report.glob("*.png")}


def test_summary_matches_logs(runs, report):
    s = json.loads((report / "summary.json").read_text())
    assert s["metric"] == "fid" and s["sort"] == "final" and s["baseline"] == runs["base"].name
    by = {k: r for r in s["runs"] for k, p in runs.items() if r["name"] == p.name}
    for name, p in runs.items():
        train = log_records(p, "train")
        assert by[name]["images_seen"] == train[-1]["images_seen"]
        assert by[name]["elapsed_s"] == train[-1]["elapsed_s"]
        assert by[name]["steps"] == train[-1]["step"]
        evals = log_records(p, "eval")
        if not evals:
            assert by[name]["final"] is None and by[name]["best"] == {}
            continue
        kid = [e["kid"][0] if isinstance(e["kid"], list) else e["kid"] for e in evals]
        assert by[name]["final"]["fid"] == evals[-1]["fid"] and by[name]["final"]["kid"] == kid[-1]
        i = min(range(len(evals)), key=lambda j: evals[j]["fid"])
        assert by[name]["best"]["fid"] == {
            "value": evals[i]["fid"],
            "step": evals[i]["step"],
            "images_seen": evals[i]["images_seen"],
        }
        assert by[name]["best"]["kid"]["value"] == min(kid)
    assert by["hinge"]["final"]["kid_std"] == pytest.approx(EVALS["hinge"][-1][2] / 10)
    assert by["hinge"]["evaluate_main"]["fid"] == 42.5 and by["hinge"]["evaluate_main"]["n"] == 10000
    # 8 vs 12 steps of batch 8: the budgets differ and the report says so.
    assert by["hinge"]["images_seen"] != by["base"]["images_seen"]
    assert s["budgets_differ"] is True and any(w.startswith("Budgets differ") for w in s["warnings"])
    assert s["winner"] == runs["hinge"].name and [r["rank"] for r in s["runs"]] == [1, 2, 3]

    md = (report / "summary.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert table[0].split("|")[1:-1] == [
        f" {h} "
        for h in (
            "rank",
            "run",
            "config diff",
            "images seen",
            "wall-clock",
            "final FID",
            "best FID (step)",
            "final KID",
            "best KID (step)",
            "evaluate FID (N)",
        )
    ]
    assert len(table) == 2 + len(RUNS)
    assert (
        f"**{runs['hinge'].name}**" in table[2]
        and "train.loss=hinge" in table[2]
        and f"{by['hinge']['images_seen']:,}" in table[2]
    )
    assert "60.00 (@6)" in table[3] and "70.00" in table[3] and "train.ema=0.9" in table[3]
    assert "baseline" in table[4] and "Budgets differ" in md


def test_sort_best_and_metric_kid(runs):
    loaded = [load_run(p) for p in runs.values()]  # summarize: the ranking without drawing the report
    s = summarize(loaded, sort="best")
    assert s["winner"] == runs["ema-aug"].name  # best FID 60 (step 6) beats hinge's 65
    s = summarize(loaded, metric="kid", sort="best")
    assert s["metric"] == "kid" and s["winner"] == runs["ema-aug"].name
    assert s["runs"][0]["rank_value"] == min(k for _, _, k in EVALS["ema-aug"] + EVALS["hinge"])
    # Only one run has an eval-*.json: ranking by it leaves the others unranked and says so.
    s = summarize(loaded, sort="evaluate")
    assert s["winner"] == runs["hinge"].name and [r["rank_value"] for r in s["runs"]] == [42.5, None, None]
    assert any("listed last, unranked" in w for w in s["warnings"])


def test_single_run_and_no_metric(runs, tmp_path):
    s = compare_runs([runs["base"]], tmp_path / "one")
    assert s["metric"] is None and s["winner"] is None and s["budgets_differ"] is False
    assert any("No FID/KID recorded" in w for w in s["warnings"])
    page = Page()
    page.feed((tmp_path / "one" / "index.html").read_text())
    assert len(page.imgs) == 2  # losses and the one grid: no metric plot without metrics


def test_rewriting_a_report_leaves_no_stale_grids(runs, tmp_path):
    out = tmp_path / "rep"
    compare_runs(list(runs.values()), out)
    assert len(list(out.glob("grid-*.png"))) == len(runs) > 1
    s = compare_runs([runs["base"]], out)  # fewer runs into the same folder
    assert [p.name for p in out.glob("grid-*.png")] == [s["runs"][0]["grid"]]


def test_errors_name_the_path(runs, tmp_path):
    not_run = tmp_path / "not-a-run"
    not_run.mkdir()
    with pytest.raises(CompareError, match="not-a-run: not a run directory") as e:
        compare_runs([runs["base"], not_run], tmp_path / "r")
    assert "\n" not in str(e.value)
    with pytest.raises(CompareError, match="missing-run: no such run directory"):
        compare_runs([tmp_path / "missing-run"], tmp_path / "r")
    with pytest.raises(CompareError, match="at least one run"):
        run_cli(["compare", "--out", str(tmp_path / "r")])
    bad = tmp_path / "bad-config"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(CompareError, match="bad-config/config.json: cannot read"):
        compare_runs([bad], tmp_path / "r")


def test_cli_main(runs, tmp_path, capsys):
    """Through `fakefacegen compare` (needs "fakefacegen.commands.compare" in cli.COMMANDS)."""
    from fakefacegen.cli import main

    assert main(["compare", str(runs["base"]), str(runs["hinge"]), "--out", str(tmp_path / "r")]) == 0
    assert f"best: {runs['hinge'].name}" in capsys.readouterr().out
    assert main(["compare", str(runs["base"]), str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'nope'}: no such run directory"]
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "examples:" in capsys.readouterr().out
