import json

import pytest

from fakefacegen.config import Config, ConfigError, apply_override, load_preset, make_config, preset_names


def test_every_preset_loads_and_validates():
    names = preset_names()
    assert {"debug", "celeba64", "celeba128"} <= set(names)
    for name in names:
        cfg = make_config(name)
        assert cfg.preset == name
        assert cfg.model.resolution in (32, 64, 128)


def test_defaults_are_the_reference_dcgan():
    c = Config()
    assert (c.train.batch_size, c.train.loss, c.g_opt.name, c.g_opt.lr, c.g_opt.beta1, c.g_opt.beta2) == (
        128,
        "bce",
        "adam",
        2e-4,
        0.5,
        0.999,
    )
    assert (c.model.z_dim, c.model.init, c.train.real_label, c.train.fake_label) == (100, "dcgan", 1.0, 0.0)


def test_overrides_are_typed():
    cfg = make_config(
        "celeba64",
        [
            "train.ema=0.999",
            "train.augment=color,translation",
            "model.spectral_norm=true",
            "d_opt.lr=1e-4",
            "train.steps=10",
        ],
    )
    assert cfg.train.ema == 0.999 and cfg.train.augment == "color,translation"
    assert cfg.model.spectral_norm is True and cfg.d_opt.lr == 1e-4 and cfg.g_opt.lr == 2e-4
    assert isinstance(cfg.train.steps, int)


def test_on_off_switches_read_as_words_not_yaml_booleans():
    cfg = make_config("celeba64", ["train.channels_last=off", "train.gemm_convs=on", "train.precision=fp32"])
    assert (cfg.train.channels_last, cfg.train.gemm_convs) == ("off", "on")
    with pytest.raises(ConfigError, match=r"train\.gemm_convs"):
        make_config("celeba64", ["train.gemm_convs=sometimes"])


@pytest.mark.parametrize(
    "override,field",
    [
        ("train.batch_size=0", "train.batch_size"),
        ("model.resolution=100", "model.resolution"),
        ("train.loss=wgan", "train.loss"),
        ("train.steps=abc", "train.steps"),
        ("train.nope=1", "train.nope"),
        ("g_opt.name=rmsprop", "g_opt.name"),
        ("train.augment=color,zoom", "train.augment"),
        ("train.ema=1.5", "train.ema"),
        ("model.width=-8", "model.width"),
        ("eval.precision=int8", "eval.precision"),
    ],
)
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        make_config("celeba64", [override])


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ConfigError, match="celeba64"):
        make_config("nonexistent")


def test_round_trip_through_json(tmp_path):
    cfg = make_config("celeba64-tutorial", ["train.ema=0.99"], data="x")
    cfg.save(tmp_path / "c.json")
    again = Config.load(tmp_path / "c.json")
    assert again == cfg and again.model.arch == "tutorial"
    assert json.loads((tmp_path / "c.json").read_text())["train"]["ema"] == 0.99


def test_preset_inheritance():
    d = load_preset("celeba64-tutorial")
    assert d["model"]["arch"] == "tutorial" and d["model"]["resolution"] == 64


def test_override_syntax_error():
    with pytest.raises(ConfigError, match="section.field=value"):
        apply_override({}, "train.steps")


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["g_opt.lr=.nan"], "g_opt.lr must be a number in (0, 1] (got nan)"),
        (["d_opt.lr=.inf"], "d_opt.lr must be a number in (0, 1] (got inf)"),
        (["train.steps=0"], "train.steps must be an integer in 1..1000000000 (got 0)"),
        (["model.resolution=48"], "model.resolution must be a power of two in 32..256 (got 48)"),
        (
            ["model.width=256"],
            "model.width 256 at model.resolution 64 gives a layer of 2048 feature maps; the limit is 1024 "
            "(model.width <= 128)",
        ),
        (
            ["model.arch=style", "model.resolution=256", "model.width=128"],
            "model.width 128 at model.resolution 256: width x resolution^2 must be at most 4194304 "
            "(model.width <= 64 at 256 px)",
        ),
        (
            ["model.resolution=256", "model.width=32", "train.batch_size=1024"],
            "train.batch_size 1024 at model.resolution 256: batch x resolution^2 must be at most 33554432 "
            "(train.batch_size <= 512 at 256 px)",
        ),
    ],
)
def test_ranges_name_the_field_and_the_range(overrides, message):
    with pytest.raises(ConfigError) as e:
        make_config("celeba64", overrides)
    assert str(e.value) == message


def test_the_largest_networks_at_the_limits_validate():
    make_config("celeba128")  # widest layer exactly 1024
    make_config("celeba64", ["model.width=128", "train.batch_size=4096"])
    make_config("celeba64", ["model.arch=style", "model.resolution=256", "model.width=64", "train.batch_size=512"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.steps=[", "override 'train.steps': the value is not valid YAML (while parsing a flow node)"),
        ("train.steps=!!python/object/apply:os.system [true]", "override 'train.steps': the value is not valid YAML"),
        ("train.steps=" + "[" * 2000, "override 'train.steps': brackets nested 2000 deep; the limit is 32"),
        ("train.steps=" + "9" * 5000, "override 'train.steps': the value is not valid YAML"),
        ("train.a\nb=1", "unknown config field(s): train.'a\\nb'"),
        (
            "data=[&a [1,1,1,1], &b [*a,*a,*a,*a], [*b,*b,*b,*b]]",
            "data must be str, got [[1, 1, 1, 1], [[1, 1, 1, 1], [1, 1, ...",
        ),
    ],
)
def test_bad_override_values_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError) as e:
        make_config("debug", [override])
    assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)


def test_config_files_too_big_deep_or_broken_are_refused_unparsed(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100 + "]" * 100)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [\n")
    looped = tmp_path / "looped.yaml"
    looped.write_text(f"base: {looped}\n")
    listed = tmp_path / "listed.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"big\.yaml: a config file must be at most 1 MiB"):
        Config.load(big)
    with pytest.raises(ConfigError, match=r"deep\.json: brackets nested 100 deep; the limit is 32"):
        Config.load(deep)
    with pytest.raises(ConfigError, match=r"broken\.yaml: cannot read config: while parsing"):
        Config.load(broken)
    with pytest.raises(ConfigError, match="the bases loop"):
        make_config(str(looped))
    with pytest.raises(ConfigError, match="must be a mapping of sections, got list"):
        make_config(str(listed))


def test_stored_model_configs_are_held_to_the_same_ranges():
    """A checkpoint's model config goes through ModelConfig.validate: a file cannot ask for a huge network."""
    from fakefacegen.config import ModelConfig

    with pytest.raises(ConfigError, match="model.width 1000 at model.resolution 64 gives a layer of 8000 feature maps"):
        ModelConfig(width=1000, z_dim=16).validate()
    with pytest.raises(ConfigError, match=r"model.z_dim must be an integer in 1..1024 \(got 1000000\)"):
        ModelConfig(z_dim=1_000_000).validate()
