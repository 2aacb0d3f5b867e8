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
