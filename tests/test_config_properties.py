"""Property tests (Hypothesis) of what a user types: ``--set section.field=value`` overrides, whole config
files, and every numeric flag of every subcommand. Any input either works (and is then inside the documented
ranges, with a network of bounded size) or is a clean one-line ConfigError / exit code 2, within a deadline;
a config is validated before any network is built."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st

from fakefacegen import bounds, cli
from fakefacegen.config import Config, ConfigError, make_config
from fakefacegen.models import build_models

# G + D parameters of the largest network any valid config builds (measured on the meta device: the style
# family at 64 px, model.width = max_width = 1024, z_dim 1024, 8 mapping layers: 213,997,584).
MAX_PARAMETERS = 215_000_000
DEADLINE_MS = 2000  # generous: the test machine is shared with a training job

FIELDS = {
    f"{section}.{f.name}": f.type
    for section, cls in (
        ("model", Config().model),
        ("g_opt", Config().g_opt),
        ("d_opt", Config().d_opt),
        ("train", Config().train),
        ("eval", Config().eval),
    )
    for f in dataclasses.fields(cls)
}
SETTINGS = settings(max_examples=300, deadline=DEADLINE_MS, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _number_text() -> st.SearchStrategy[str]:
    """Numbers as a user might type them: small and huge integers, floats, exponents, nan/inf, junk around."""
    return st.one_of(
        st.integers(-(10**30), 10**30).map(str),
        st.integers(-3, 5000).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.floats(-10, 10).map(lambda x: f"{x:.3g}"),
        st.sampled_from(["nan", ".nan", ".inf", "-.inf", "1e999", "0x10", "1_000", "9" * 5000, " 7 ", "+3", "-0"]),
    )


def _value_text() -> st.SearchStrategy[str]:
    """An override's right-hand side: numbers, YAML of every kind (lists, maps, tags, aliases) or any text."""
    return st.one_of(
        _number_text(),
        st.text(max_size=40),
        st.sampled_from(
            [
                "[",
                "{a: 1}",
                "[1, 2]",
                "!!python/object/apply:os.system [true]",
                "&a [*a]",
                "[&a [1,1,1], &b [*a,*a,*a], [*b,*b,*b]]",
                "true",
                "off",
                "null",
                "2020-01-01",
                "'quoted'",
                "[" * 2000,
            ]
        ),
    )


def _one_line(e: Exception) -> None:
    event("refused")
    msg = str(e)
    assert msg and "\n" not in msg and len(msg) < 400, msg


def _check_bounded(cfg: Config) -> None:
    """A valid config: every ranged field inside its range, and the network it describes is of bounded size
    (built on the meta device: no memory is allocated)."""
    event("valid")
    cfg.validate()
    for name, rng in bounds.CONFIG.items():
        section, field = name.split(".")
        assert rng.contains(getattr(getattr(cfg, section), field)), name
    with torch.device("meta"):
        g, d = build_models(cfg.model)
    n = sum(p.numel() for m in (g, d) for p in m.parameters())
    target(n / 1e6, label="million parameters of a valid config")  # Hypothesis looks for the largest
    assert n <= MAX_PARAMETERS, (n, cfg.model)


with torch.device("meta"):  # the first build's one-off costs (imports, dispatch), before any deadline
    build_models(make_config("debug").model)


@pytest.mark.slow  # hundreds of examples: the full suite runs it, the fast tier does not
@SETTINGS
@given(field=st.one_of(st.sampled_from(sorted(FIELDS)), st.text(max_size=20)), value=_value_text())
def test_any_override_validates_or_is_one_config_error(field, value):
    try:
        cfg = make_config("debug", [f"{field}={value}"])
    except ConfigError as e:
        _one_line(e)
        return
    _check_bounded(cfg)


def _mostly(valid: st.SearchStrategy, wild: st.SearchStrategy) -> st.SearchStrategy:
    """Values inside the documented range three times in four, anything else otherwise."""
    return st.one_of(valid, valid, valid, wild)


model_overrides = st.fixed_dictionaries(
    {
        "model.arch": st.sampled_from(["reference", "tutorial", "style"]),
        "model.resolution": _mostly(st.sampled_from([32, 64, 128, 256]), st.sampled_from([16, 48, 512, 0])),
        "model.width": _mostly(
            st.one_of(st.integers(1, 1024 * 8 // 256), st.integers(1, 1024)),
            st.one_of(st.integers(-2, 2048), st.sampled_from([10**6, 10**12])),
        ),
        "model.z_dim": _mostly(st.integers(1, 1024), st.integers(-2, 10**5)),
        "model.max_width": _mostly(st.integers(1, 1024), st.integers(-2, 10**5)),
        "model.mapping_layers": _mostly(st.integers(1, 8), st.integers(-1, 100)),
        "train.batch_size": _mostly(st.integers(1, 512), st.integers(-1, 10**5)),
    }
)


@pytest.mark.slow  # hundreds of examples: the full suite runs it, the fast tier does not
@settings(SETTINGS, max_examples=200)
@given(model_overrides)
def test_network_sizes_are_bounded_before_anything_is_built(overrides):
    """Combinations of the size fields: each is refused, or describes a network within MAX_PARAMETERS."""
    try:
        cfg = make_config("debug", [f"{k}={v}" for k, v in overrides.items()])
    except ConfigError as e:
        _one_line(e)
        return
    _check_bounded(cfg)


leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10))
values = st.one_of(
    leaves,
    st.sampled_from(["bce", "style", "adam", "on", "fid", "64", "1e-4"]),
    st.lists(leaves, max_size=3),
    st.dictionaries(st.text(max_size=5), leaves, max_size=3),
)
field_names = sorted({k.split(".")[1] for k in FIELDS})
sections = st.dictionaries(st.one_of(st.sampled_from(field_names), st.text(max_size=5)), values, max_size=6)


@pytest.mark.slow  # hundreds of examples: the full suite runs it, the fast tier does not
@SETTINGS
@given(
    st.dictionaries(
        st.one_of(st.sampled_from(["model", "train", "g_opt", "d_opt", "eval", "data", "preset"]), st.text(max_size=5)),
        st.one_of(sections, values),
        max_size=5,
    )
)
def test_any_config_file_content_validates_or_is_one_config_error(d):
    try:
        cfg = Config.from_dict(d)
    except ConfigError as e:
        _one_line(e)
        return
    _check_bounded(cfg)


# ---- The train command: validation happens before a network is built ---------------------------------


@pytest.fixture
def builds(monkeypatch) -> list:
    """Records every build_models call of `train --dry-run`, and builds on the meta device (no memory)."""
    import fakefacegen.models as models

    calls: list = []
    real = models.build_models

    def on_meta(mc):
        calls.append(mc)
        with torch.device("meta"):
            return real(mc)

    monkeypatch.setattr(models, "build_models", on_meta)
    return calls


@pytest.mark.slow  # hundreds of examples: the full suite runs it, the fast tier does not
@settings(SETTINGS, max_examples=150)
@given(overrides=model_overrides)
def test_train_refuses_before_building(overrides, builds):
    builds.clear()
    argv = ["train", "--preset", "debug", "--dry-run", "--device", "cpu"]
    for k, v in overrides.items():
        argv += ["--set", f"{k}={v}"]
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    if rc == 2:
        event("refused")
        assert builds == [] and len(err.getvalue().splitlines()) == 1, err.getvalue()
    else:
        event("built")
        assert rc == 0 and len(builds) == 1


# ---- Every numeric flag of every subcommand ---------------------------------------------------------


def _numeric_flags() -> list[tuple[str, str, bounds.Range]]:
    p = cli._parser()
    (sub,) = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    out = []
    for name, s in sorted(sub.choices.items()):
        for action in s._actions:
            if isinstance(action.type, bounds.FlagType):
                flag = next(o for o in action.option_strings if o.startswith("--"))
                out.append((name, flag, action.type.range))
    return out


NUMERIC_FLAGS = _numeric_flags()
PARSER = cli._parser()


def _expected(text: str, rng: bounds.Range) -> int | float | None:
    """What the flag should read ``text`` as, or None where it must be refused."""
    try:
        v: int | float = int(text) if rng.integer else float(text)
    except ValueError:
        return None
    if not math.isfinite(v) or not (v > rng.lo if rng.lo_open else v >= rng.lo):
        return None
    if not (v < rng.hi if rng.hi_open else v <= rng.hi):
        return None
    if rng.pow2 and int(v) & (int(v) - 1):
        return None
    return v


BASE = {
    "prepare": ["x", "--out", "o"],
    "audit": ["--data", "d"],
    "project": ["p.png"],
    "interpolate": ["--seeds", "1,2"],
}


@pytest.mark.slow  # hundreds of examples: the full suite runs it, the fast tier does not
@settings(max_examples=600, deadline=DEADLINE_MS)
@given(case=st.sampled_from(NUMERIC_FLAGS), text=_number_text())
def test_every_numeric_flag_reads_its_range_or_exits_2_with_one_line(case, text):
    command, flag, rng = case
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = PARSER.parse_args([command, *BASE.get(command, []), f"{flag}={text}"])
        except SystemExit as e:
            args, code = None, e.code
    expect = _expected(text, rng)
    event("refused" if expect is None else "read")
    if expect is None:
        assert args is None and code == 2, (command, flag, text)
        line = err.getvalue()
        assert line == f"error: {flag} must be {rng} (got {bounds.shown(text)})\n", line
    else:
        assert args is not None and getattr(args, flag[2:].replace("-", "_")) == expect
        assert rng.contains(expect)


@pytest.mark.parametrize("arch", ["reference", "tutorial", "style"])
@pytest.mark.parametrize("resolution", [32, 64, 128, 256])
def test_the_largest_valid_networks_are_within_the_bound(arch, resolution):
    """At each size, the widest model.width that validates (everything else at its maximum) builds at most
    MAX_PARAMETERS, and one more is refused before anything is built."""
    top = ["model.z_dim=1024", "model.max_width=1024", "model.mapping_layers=8", "train.batch_size=1"]
    lo, hi = 1, 1024  # the widest valid width, by bisection (validity falls as width grows)
    assert _valid(arch, resolution, lo, top)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _valid(arch, resolution, mid, top) else (lo, mid - 1)
    w = lo
    cfg = make_config("debug", [f"model.arch={arch}", f"model.resolution={resolution}", f"model.width={w}", *top])
    with torch.device("meta"):
        g, d = build_models(cfg.model)
    assert sum(p.numel() for m in (g, d) for p in m.parameters()) <= MAX_PARAMETERS
    if w < 1024:
        with pytest.raises(ConfigError, match=r"model\.width"):
            make_config("debug", [f"model.arch={arch}", f"model.resolution={resolution}", f"model.width={w + 1}", *top])


def _valid(arch: str, resolution: int, width: int, top: list[str]) -> bool:
    try:
        make_config("debug", [f"model.arch={arch}", f"model.resolution={resolution}", f"model.width={width}", *top])
    except ConfigError:
        return False
    return True


def test_the_flag_table_is_not_empty():
    assert len(NUMERIC_FLAGS) >= 30 and {c for c, _, _ in NUMERIC_FLAGS} >= {"generate", "train", "interpolate"}
