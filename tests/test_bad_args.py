"""Bad arguments for every subcommand of ``cli.COMMANDS``: each is exit code 2, exactly one line on
stderr starting with ``error:``, no traceback, and nothing written (the working directory, where every
output goes, stays empty; the inputs are untouched).

The table has two parts: every numeric flag of every subcommand, read from the parsers, with values
below, above and outside its documented range (the expected line is exact); and cases written by hand
(conflicting flags, bad config overrides, devices this machine lacks, files too big, ...)."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, make_dataset_dir, make_tiny_generator
from fakefacegen import bounds, cli


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    p = cli._parser()
    (sub,) = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


SUBCOMMANDS = sorted(_subparsers())

# Arguments that make each command valid but for the one bad argument a case adds. Placeholders in
# capitals are replaced by the inputs fixture's files; outputs go to the (empty) working directory.
BASE = {
    "prepare": ["PHOTOS", "--out", "ds"],
    "train": ["--data", "DS", "--preset", "debug", "--quiet"],
    "generate": ["MODEL", "--out", "faces"],
    "evaluate": ["MODEL", "--data", "DS"],
    "audit": ["MODEL", "--data", "DS", "--spaces", "pixel"],
    "project": ["PHOTO", "--model", "MODEL", "--no-face-check"],
    "interpolate": ["MODEL", "--seeds", "1,2"],
    "export": ["MODEL"],
    "compare": ["RUN"],
    "demo": ["MODEL", "--port", "0"],
    "edit": ["MODEL", "--attr", "Smiling=+2"],
    "directions": ["MODEL"],
}


def _flag(action: argparse.Action) -> str:
    return next(o for o in action.option_strings if o.startswith("--"))


def _bad_numbers(rng: bounds.Range) -> list[str]:
    """Values outside ``rng``: just below and above it, not a number, and the wrong kind of number."""
    lo, hi = rng.lo, rng.hi
    if rng.integer:
        vals = [str(int(lo) - 1), str(int(hi) + 1), "abc", "1.5", "1e3" if hi < 1000 else "2.5e9"]
        if rng.pow2:
            vals.append(str(int(lo) * 3 // 2))  # inside the range, not a power of two
        return vals
    below = lo if rng.lo_open else lo - 1
    above = hi if rng.hi_open else hi + 1
    return [f"{below:g}", f"{above:g}", "nan", "inf", "-inf", "abc", ""]


def _numeric_cases() -> list[tuple[str, list[str], str]]:
    cases = []
    for name, s in sorted(_subparsers().items()):
        for action in s._actions:
            if isinstance(action.type, bounds.FlagType):
                rng, flag = action.type.range, _flag(action)
                for v in _bad_numbers(rng):
                    # FLAG=VALUE: argparse reads a lone '-inf' as an option, not as the flag's value
                    cases.append((name, [f"{flag}={v}"], f"error: {flag} must be {rng} (got {bounds.shown(v)})"))
    return cases


BIG = "9" * 5000  # an integer argparse, YAML and int() must not choke on

# (subcommand, extra arguments, a piece of the expected error line)
HAND: list[tuple[str, list[str], str]] = [
    # every command: unknown flags and bad choices
    *[(c, ["--no-such-flag"], "unrecognized arguments: --no-such-flag") for c in BASE],
    # --device: a form that is not documented, or a backend this torch lacks (a CPU-only test machine)
    *[
        (c, ["--device", dev], msg)
        for c in ("train", "generate", "evaluate", "audit", "project", "interpolate", "demo", "edit", "directions")
        for dev, msg in (
            ("tpu", "--device must be one of auto, cpu, cuda, cuda:N or mps (got 'tpu')"),
            ("cuda:-1", "--device must be one of"),
            ("meta", "--device must be one of"),
            ("cuda", "--device cuda: CUDA is not available on this machine"),
            ("cuda:7", "--device cuda:7: CUDA is not available"),
            ("mps", "--device mps: Apple MPS is not available on this machine"),
        )
    ],
    # prepare
    ("prepare", ["--size", "48"], "--size must be a power of two in 32..256 (got 48)"),
    ("prepare", ["--workers", BIG], "--workers must be an integer in 1..256 (got 999999999999"),
    # train: --resume refuses what it would ignore; --config with --preset; config overrides
    ("train", ["--config", "CONFIG"], "give --config FILE or --preset NAME, not both"),
    ("train", ["--set", "train.steps"], "must look like section.field=value"),
    ("train", ["--set", "train.steps=["], "override 'train.steps': the value is not valid YAML"),
    ("train", ["--set", "train.steps=!!python/object/apply:os.system [echo]"], "not valid YAML"),
    ("train", ["--set", f"train.steps={BIG}"], "not valid YAML"),
    ("train", ["--set", "train.steps=1.0e+30"], "train.steps must be an integer in 1..1000000000 (got 10000000000"),
    ("train", ["--set", "g_opt.lr=.nan"], "g_opt.lr must be a number in (0, 1] (got nan)"),
    ("train", ["--set", "d_opt.beta2=1"], "d_opt.beta2 must be a number in [0, 1) (got 1.0)"),
    ("train", ["--set", "train.ema=-.inf"], "train.ema must be a number in [0, 1) (got -inf)"),
    ("train", ["--set", "train.r1_gamma=1e9"], "train.r1_gamma must be a number in [0, 1000] (got 1000000000.0)"),
    ("train", ["--set", "model.z_dim=100000"], "model.z_dim must be an integer in 1..1024 (got 100000)"),
    ("train", ["--set", "model.width=512"], "gives a layer of 2048 feature maps; the limit is 1024"),
    ("train", ["--set", "model.resolution=512"], "model.resolution must be a power of two in 32..256 (got 512)"),
    ("train", ["--set", "model.arch=style", "--set", "model.resolution=256", "--set", "model.width=128"], "x res"),
    ("train", ["--set", "train.batch_size=4096", "--set", "model.resolution=256"], "batch x resolution^2"),
    ("train", ["--set", "train.nope=1"], "unknown config field(s): train.nope"),
    ("train", ["--set", "train.steps=[1, 2]"], "train.steps must be int, got [1, 2]"),
    ("train", ["--set", "train.steps={a: 1}"], "train.steps must be int"),
    ("train", ["--set", "train=3"], "train must be a mapping"),
    ("train", ["--set", "train.loss=wgan"], "train.loss must be one of bce, hinge, lsgan, rpgan"),
    ("train", ["--preset", "no-such-preset"], "unknown preset 'no-such-preset'"),
    ("train", ["--set", "data=[&a [1,1,1,1], &b [*a,*a,*a,*a], &c [*b,*b,*b,*b], [*c,*c,*c,*c]]"], "data must be str"),
    # generate
    ("generate", ["--no-grid", "--grid-only"], "--no-grid and --grid-only together would write nothing"),
    ("generate", ["--latent", "NOFILE"], "cannot read the latent"),
    ("generate", ["--latent", "HUGE_LATENT"], "a latent file must be at most 64 MiB"),
    ("generate", ["--latent", "MANY_LATENTS"], "the number of latents must be an integer in 1..1024 (got 1025)"),
    ("generate", ["--which", "worst"], "--which: invalid choice: 'worst'"),
    # evaluate
    ("evaluate", ["--metrics", "fid,nope"], "--metrics: unknown metric 'nope'"),
    ("evaluate", ["--resize", "bilinear"], "--resize: invalid choice: 'bilinear'"),
    ("evaluate", ["--precision", "int8"], "--precision: invalid choice"),
    ("evaluate", ["--fake", "PHOTOS"], "exactly one of: a model"),
    # audit
    ("audit", ["--holdout", "DS", "--holdout-fraction", "0.5"], "not allowed with argument --holdout"),
    # project
    ("project", ["--candidates", "0"], "--candidates must be an integer in 1..1024 (got 0)"),
    # interpolate
    ("interpolate", ["--seeds", "1"], "--seeds needs at least two seeds"),
    ("interpolate", ["--seeds", "1,a"], "--seeds must be comma-separated seeds or latent files"),
    ("interpolate", ["--seeds", "1,-2"], "each of --seeds must be an integer in 0..4294967295 (got -2)"),
    ("interpolate", ["--seeds", f"1,{2**32}"], "each of --seeds must be an integer in 0..4294967295 (got 4294967296)"),
    ("interpolate", ["--seeds", f"1,{BIG}"], "--seeds must be comma-separated seeds or latent files"),
    ("interpolate", ["--seeds", ",".join(map(str, range(65)))], "--seeds takes at most 64 seeds (got 65)"),
    ("interpolate", ["--seeds", "1,2", "--frames", "64", "--scale", "8", "--loop"], "frames x scale^2 must be at"),
    (
        "interpolate",
        ["--seeds", ",".join(map(str, range(64))), "--frames", "64", "--scale", "2"],
        "the walk would be 3970 frames at --scale 2: frames x scale^2 must be at most 4096",
    ),
    ("interpolate", ["--format", "mp4"], "--format: invalid choice: 'mp4'"),
    # export
    ("export", ["--format", "torchscript", "--opset", "12"], "--opset is for ONNX"),
    ("export", ["--format", "pdf"], "--format: invalid choice: 'pdf'"),
    # compare
    ("compare", ["NORUN"], "no such run directory"),
    ("compare", ["--metric", "psnr"], "--metric: invalid choice: 'psnr'"),
    ("compare", ["--sort", "random"], "--sort: invalid choice: 'random'"),
    ("compare", ["--metric"], "--metric: expected one argument"),
    ("compare", ["NORUN"], "no such run directory"),
    # demo
    ("demo", ["--which", "worst"], "--which: invalid choice: 'worst'"),
]
CASES = [(c, argv, expect, True) for c, argv, expect in _numeric_cases()] + [(c, a, e, False) for c, a, e in HAND]

# Whole argument lists (no base): missing arguments, missing files, --resume with what it would ignore.
MISSING = [
    ("prepare", [], "the following arguments are required: sources, --out"),
    ("audit", ["MODEL"], "the following arguments are required: --data"),
    ("project", [], "the following arguments are required: PHOTO"),
    ("interpolate", ["MODEL"], "the following arguments are required: --seeds"),
    ("evaluate", ["MODEL"], "evaluate needs --data/--real"),
    ("compare", [], "compare needs at least one run directory"),
    ("edit", ["MODEL"], "give at least one --attr NAME=AMOUNT"),
    ("edit", ["MODEL", "--attr", "Smiling=+2", "--latent", "NOFILE", "--index", "3"], "--latent and --index do not go"),
    ("directions", ["MODEL", "--data", "DS"], "--data and --labels go together"),
    ("generate", ["NOMODEL"], "no such file or directory"),
    ("demo", ["NOMODEL", "--port", "0"], "no such file or directory"),
    ("demo", ["MODEL", "--directions", "NOFILE", "--port", "0"], "no directions file for this model"),
    ("export", ["NOMODEL"], "no such file or directory"),
    ("interpolate", ["NOMODEL", "--seeds", "1,2"], "no such file or directory"),
    *[
        (
            "train",
            ["--resume", "RUN", *extra],
            f"--resume continues a run with its saved config, so {flag} would be ignored; "
            "only --steps, --device, --quiet",
        )
        for flag, extra in (
            ("--batch-size", ["--batch-size", "8"]),
            ("--seed", ["--seed", "3"]),
            ("--eval-every", ["--eval-every", "5"]),
            ("--eval-n", ["--eval-n", "100"]),
            ("--name", ["--name", "x"]),
            ("--outdir", ["--outdir", "elsewhere"]),
            ("--dry-run", ["--dry-run"]),
            ("--set", ["--set", "train.ema=0.9"]),
            ("--preset", ["--preset", "debug"]),
            ("--config", ["--config", "CONFIG"]),
            ("--data", ["--data", "DS"]),
        )
    ],
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """The files the cases read: a tiny generator, a dataset, photos, a saved config and run, latents."""
    from PIL import Image

    root = tmp_path_factory.mktemp("inputs")
    photos = root / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(np.full((48, 40, 3), 40 * i, np.uint8)).save(photos / f"p{i}.png")
    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (root / "config.json").write_text('{"train": {"steps": 2}}')
    with open(root / "huge.npy", "wb") as f:
        f.truncate((bounds.LATENT_FILE_MB << 20) + 1)  # sparse: the size check must refuse it unread
    np.save(root / "many.npy", np.zeros((1025, 16), np.float32))
    return {
        "MODEL": str(make_tiny_generator(root / "g.safetensors")),
        "DS": str(make_dataset_dir(root / "ds", n=8, size=32)),
        "PHOTOS": str(photos),
        "PHOTO": str(photos / "p0.png"),
        "RUN": str(run),
        "CONFIG": str(root / "config.json"),
        "HUGE_LATENT": str(root / "huge.npy"),
        "MANY_LATENTS": str(root / "many.npy"),
        "NOFILE": str(root / "missing.npy"),
        "NOMODEL": str(root / "missing.safetensors"),
        "NORUN": str(root / "missing-run"),
    }


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


_PARSER = cli._parser()


@pytest.fixture(autouse=True)
def _one_parser(monkeypatch):
    """cli.main builds its parser per call (~40 ms for 12 subcommands); the table's 400 calls share one."""
    monkeypatch.setattr(cli, "_parser", lambda: _PARSER)


@pytest.fixture
def no_serving(monkeypatch):
    """A demo case that validated by mistake fails at once instead of serving forever."""
    from fakefacegen.demo import server

    def refuse(*a, **k):
        raise AssertionError("the demo started serving: this case was accepted")

    monkeypatch.setattr(server, "serve", refuse)


def _run(argv: list[str], inputs: dict[str, str], cwd: Path, capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("FAKEFACEGEN_DEBUG", raising=False)
    rc = cli.main([inputs.get(a, a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _problem(rc: int, out: str, err: str, expect: str, exact: bool, cwd: Path) -> str | None:
    """What is wrong with one case's outcome, or None."""
    lines = err.splitlines()
    if rc != 2:
        return f"exit code {rc}"
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return f"stderr is not one 'error:' line: {err!r}"
    if "Traceback" in err + out:
        return "a traceback"
    if (lines[0] != expect) if exact else (expect not in lines[0]):
        return f"got {lines[0]!r}, expected {'exactly' if exact else 'a line with'} {expect!r}"
    written = sorted(p.name for p in cwd.iterdir())
    return f"wrote {written}" if written else None


def _run_table(cases, inputs, cwd, capsys, monkeypatch) -> list[str]:
    """Every case of ``cases`` (command, whole argv, expected, exact), in the same empty working directory
    (each case must leave it empty); the failures, one line each."""
    before = _tree(Path(inputs["MODEL"]).parent)
    failures = []
    for _command, argv, expect, exact in cases:
        rc, out, err = _run(argv, inputs, cwd, capsys, monkeypatch)
        problem = _problem(rc, out, err, expect, exact, cwd)
        if problem:
            failures.append(f"fakefacegen {' '.join(argv)[:160]}: {problem}")
            for p in cwd.iterdir():  # so that the next case starts from an empty directory again
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    assert _tree(Path(inputs["MODEL"]).parent) == before, "an input was changed"
    return failures


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_bad_arguments_are_one_clean_line(command, inputs, tmp_path, capsys, monkeypatch, no_serving):
    cases = [(c, [c, *BASE[c], *argv], expect, exact) for c, argv, expect, exact in CASES if c == command]
    cases += [(c, [c, *argv], expect, False) for c, argv, expect in MISSING if c == command]
    failures = _run_table(cases, inputs, tmp_path, capsys, monkeypatch)
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures)


def test_the_table_covers_every_subcommand_and_numeric_flag():
    per_command = {c: sum(1 for case in CASES + MISSING if case[0] == c) for c in SUBCOMMANDS}
    assert set(per_command) == set(BASE) and len(SUBCOMMANDS) == len(cli.COMMANDS)
    assert min(per_command.values()) >= 4, per_command
    flags_seen = {(c, a[0].split("=")[0]) for c, a, _, exact in CASES if exact}
    for name, s in _subparsers().items():
        for action in s._actions:
            if isinstance(action.type, bounds.FlagType):
                assert (name, _flag(action)) in flags_seen
    print(f"\nbad-argument table: {len(CASES) + len(MISSING)} cases over {len(SUBCOMMANDS)} subcommands: {per_command}")


def test_unknown_subcommand_and_none(tmp_path, capsys, monkeypatch):
    for argv, expect in (([], "the following arguments are required: COMMAND"), (["nosuch"], "invalid choice")):
        rc, out, err = _run(argv, {}, tmp_path, capsys, monkeypatch)
        assert _problem(rc, out, err, expect, False, tmp_path) is None


@pytest.mark.slow
def test_the_installed_command_exits_2_with_one_line(tmp_path):
    """The real process: exit status 2 and one stderr line, for an argparse error and one raised in run()."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    env.pop("FAKEFACEGEN_DEBUG", None)
    for argv, expect in (
        (["generate", "-n", "0"], "error: --n must be an integer in 1..100000 (got 0)"),
        (["generate", "--device", "cuda"], "error: --device cuda: CUDA is not available on this machine"),
    ):
        if expect.endswith("machine") and _has_cuda():
            continue
        r = subprocess.run(
            [sys.executable, "-m", "fakefacegen", *argv], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert r.returncode == 2 and r.stderr.splitlines()[0].startswith(expect), r.stderr
        assert len(r.stderr.splitlines()) == 1 and not any(tmp_path.iterdir())


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_defaults_are_inside_their_ranges():
    """A default outside its documented range would make the range a lie (argparse does not check defaults)."""
    for name, s in _subparsers().items():
        for action in s._actions:
            if isinstance(action.type, bounds.FlagType) and action.default is not None:
                assert action.type.range.contains(action.default), (name, _flag(action), action.default)
                assert action.type.range.short() in action.help, (name, _flag(action), action.help)
    assert math.isfinite(bounds.WALK_BUDGET)


def test_security_md_documents_every_range():
    """SECURITY.md's tables name each numeric flag (with its commands) and config field with its range."""
    rows = [line for line in (REPO / "SECURITY.md").read_text().splitlines() if line.startswith("| `")]

    def documented(names: list[str], rng: bounds.Range) -> bool:
        return any(
            all(f"`{n}`" in row for n in names) and f"| {rng.short()}" in row and (not rng.pow2 or "powers" in row)
            for row in rows
        )

    for name, s in _subparsers().items():
        for action in s._actions:
            if isinstance(action.type, bounds.FlagType):
                assert documented([name, _flag(action)], action.type.range), (name, _flag(action))
    for field, rng in bounds.CONFIG.items():
        assert documented([field], rng), field
