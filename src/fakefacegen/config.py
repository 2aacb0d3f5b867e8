"""One typed configuration for a run: model, optimisers, training, evaluation.

A run's config is written to ``config.json`` in its run directory before training starts and is
stored in every checkpoint, so any run can be repeated or resumed. Presets in ``configs/*.yaml``
are small diffs on these defaults; ``--set section.field=value`` overrides one field.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from . import bounds
from .atomic import atomic_write_text


class ConfigError(ValueError):
    """A config value or override is invalid; the message names the field."""


@dataclass
class ModelConfig:
    resolution: int = 64
    """Output side in pixels: a power of two from 32 to 256."""
    z_dim: int = 100
    """Length of the noise vector."""
    width: int = 64
    """Feature maps of G's last hidden layer and D's first layer; doubled per block towards 4x4."""
    arch: str = "reference"
    """The model family. DCGAN: 'reference' (kernel 5, padding 2) or 'tutorial' (kernel 4, padding 1, as
    the PyTorch tutorial). 'style': the modern family of stylegan.py (mapping network, modulated
    convolutions, residual D; w has z_dim dimensions)."""
    max_width: int = 256
    """'style' only: the most feature maps of any layer (width doubles per halving of the resolution up to it)."""
    mapping_layers: int = 2
    """'style' only: fully connected layers of the mapping network z -> w."""
    noise_inputs: bool = False
    """'style' only: StyleGAN's per-pixel noise inputs, one map per synthesis convolution with a learned
    strength; each map is a fixed function of w (stylegan.py), so a face still depends on its latent only."""
    init: str = "dcgan"
    """DCGAN only: 'dcgan': weights N(0, 0.02), BN gamma N(1, 0.02); 'default': PyTorch's own init.
    (The 'style' family always uses its equalised-learning-rate init.)"""
    d_norm: str = "batch"
    """DCGAN only: normalisation in D after the first layer: 'batch' or 'none'."""
    spectral_norm: bool = False
    """DCGAN only: spectral normalisation on every D layer (Miyato et al. 2018)."""

    @property
    def family(self) -> str:
        """'dcgan' or 'style'."""
        return "style" if self.arch == "style" else "dcgan"

    def validate(self) -> None:
        _in_ranges(self, "model")
        _choice("model.arch", self.arch, ("reference", "tutorial", "style"))
        # The network's size, from the fields alone: checked before anything is built.
        r, w = self.resolution, self.width
        widest = min(w * r // 4, self.max_width) if self.arch == "style" else w * r // 8
        if widest > bounds.WIDEST_LAYER:
            raise ConfigError(
                f"model.width {w} at model.resolution {r} gives a layer of {widest} feature maps; the limit is "
                f"{bounds.WIDEST_LAYER} (model.width <= {bounds.WIDEST_LAYER * (4 if self.arch == 'style' else 8) // r}"
                + (" or a smaller model.max_width)" if self.arch == "style" else ")")
            )
        if w * r * r > bounds.FULL_RES_MAPS:
            raise ConfigError(
                f"model.width {w} at model.resolution {r}: width x resolution^2 must be at most "
                f"{bounds.FULL_RES_MAPS} (model.width <= {bounds.FULL_RES_MAPS // (r * r)} at {r} px)"
            )
        if self.arch != "style" and self.noise_inputs:
            raise ConfigError("model.noise_inputs applies to the style family only (model.arch=style)")
        if self.arch == "style" and self.spectral_norm:
            raise ConfigError("model.spectral_norm applies to the DCGAN family only (model.arch=style has none)")
        _choice("model.init", self.init, ("dcgan", "default"))
        _choice("model.d_norm", self.d_norm, ("batch", "none"))


@dataclass
class OptimConfig:
    name: str = "adam"
    """'adam' or 'sgd'."""
    lr: float = 2e-4
    """Learning rate."""
    beta1: float = 0.5
    """Adam beta1 (DCGAN uses 0.5)."""
    beta2: float = 0.999
    """Adam beta2."""
    momentum: float = 0.9
    """SGD momentum."""
    weight_decay: float = 0.0
    """L2 weight decay."""

    def validate(self, prefix: str) -> None:
        _choice(f"{prefix}.name", self.name, ("adam", "sgd"))
        _in_ranges(self, prefix)


@dataclass
class TrainConfig:
    steps: int = 5000
    """Total optimisation steps (one D update and one G update each)."""
    batch_size: int = 128
    """Global batch size: split evenly over processes under torchrun."""
    loss: str = "bce"
    """'bce' (non-saturating), 'hinge', 'lsgan' or 'rpgan' (relativistic pairing, R3GAN's; with R1 + R2)."""
    real_label: float = 1.0
    """Target for real images in BCE; 0.9 gives one-sided label smoothing."""
    fake_label: float = 0.0
    """Target for fakes in BCE; 0.1 with real_label 0.9 gives two-sided smoothing."""
    ema: float = 0.0
    """Decay of an exponential moving average of G's weights; 0 turns it off (e.g. 0.999)."""
    ema_start: int = 0
    """Step from which the EMA averages; before it the EMA copy follows G exactly."""
    augment: str = ""
    """DiffAugment policies applied to real and fake before D: comma list of color, translation, cutout."""
    r1_gamma: float = 0.0
    """R1 gradient penalty weight on real images (0 = off)."""
    r2_gamma: float = 0.0
    """R2 gradient penalty weight on generated images (0 = off), on the same lazy schedule as R1."""
    r1_every: int = 16
    """Lazy R1/R2: apply every N steps with the penalty scaled by N."""
    seed: int = 0
    """Seeds noise, data order, flips and augmentation; the same seed repeats a run bit for bit on CPU."""
    flip: bool = True
    """Random horizontal flip of real images."""
    log_every: int = 50
    """Steps between lines in log.jsonl."""
    sample_every: int = 500
    """Steps between fixed-noise sample grids."""
    ckpt_every: int = 1000
    """Steps between checkpoints (a checkpoint is also written at the end and on SIGINT/SIGTERM)."""
    keep_checkpoints: int = 2
    """How many step checkpoints to keep besides latest and best (0 = keep all)."""
    precision: str = "auto"
    """'auto', 'fp32', 'bf16' or 'fp16' (fp16 only on CUDA). auto: bf16 on CPUs with native bf16, AMP on CUDA."""
    channels_last: str = "auto"
    """'auto', 'on' or 'off': NHWC memory format for the convolutions."""
    gemm_convs: str = "auto"
    """'auto', 'on' or 'off': the convolutions on 2x2..4x4 maps as im2col + matrix multiply under CPU bf16
    autocast (gemm_conv.py). auto: on where the CPU has native bf16 and the run uses bf16."""
    compile: bool = False
    """torch.compile both networks."""
    cuda_graphs: str = "auto"
    """'auto', 'on', 'off' or 'static': the whole step (D phase, G phase, optimiser steps) captured once as a CUDA
    graph and replayed (step_capture.py). auto: on for one process on CUDA (not with fp16's gradient scaler or
    train.compile), off on CPU and MPS. static: the captured step's static buffers run eagerly, no capture, on any
    device (for checking that path; no faster than off)."""
    threads: int = 0
    """CPU threads for PyTorch (0 = all cores available to the process)."""
    on_nan: str = "stop"
    """What to do when a loss or weight becomes NaN/Inf: 'stop' or 'rollback' (to the last good checkpoint)."""
    sync_bn: bool = False
    """Under torchrun: SyncBatchNorm across processes instead of per-process BatchNorm."""

    def validate(self) -> None:
        _in_ranges(self, "train")
        _choice("train.loss", self.loss, ("bce", "hinge", "lsgan", "rpgan"))
        for p in filter(None, self.augment.split(",")):
            _choice("train.augment", p.strip(), ("color", "translation", "cutout"))
        _choice("train.precision", self.precision, ("auto", "fp32", "bf16", "fp16"))
        _choice("train.channels_last", self.channels_last, ("auto", "on", "off"))
        _choice("train.gemm_convs", self.gemm_convs, ("auto", "on", "off"))
        _choice("train.cuda_graphs", self.cuda_graphs, ("auto", "on", "off", "static"))
        _choice("train.on_nan", self.on_nan, ("stop", "rollback"))


@dataclass
class EvalConfig:
    every: int = 0
    """Steps between metric evaluations during training (0 = off)."""
    n: int = 2000
    """Images (real and fake) per evaluation."""
    metric: str = "fid"
    """Metric that picks the 'best' checkpoint: 'fid' or 'kid'."""
    inception: str = ""
    """Path to the Inception weights (empty: FAKEFACEGEN_INCEPTION or the cache)."""
    precision: str = "fp32"
    """Inception precision: 'fp32' (the protocol's) or 'bf16'/'fp16' (about 2x faster on CPUs with native
    bf16, FID within 0.4% there; see benchmarks/README.md)."""
    audit: bool = False
    """Log the memorisation audit's cheap form with each evaluation: the share of generated faces closer to
    an evaluated training face than the 1st percentile of real faces' nearest distances, in the same
    Inception features as FID (copy_rate, nn_median; docs/audit.md). A trend, not the audit's number."""

    def validate(self) -> None:
        _in_ranges(self, "eval")
        _choice("eval.metric", self.metric, ("fid", "kid"))
        _choice("eval.precision", self.precision, ("fp32", "bf16", "fp16"))


@dataclass
class Config:
    data: str = ""
    """Prepared dataset directory (from `fakefacegen prepare`)."""
    preset: str = ""
    """Name of the preset this config started from (informational)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    g_opt: OptimConfig = field(default_factory=OptimConfig)
    d_opt: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> Config:
        self.model.validate()
        self.g_opt.validate("g_opt")
        self.d_opt.validate("d_opt")
        self.train.validate()
        self.eval.validate()
        b, r = self.train.batch_size, self.model.resolution
        if b * r * r > bounds.BATCH_PIXELS:
            raise ConfigError(
                f"train.batch_size {b} at model.resolution {r}: batch x resolution^2 must be at most "
                f"{bounds.BATCH_PIXELS} (train.batch_size <= {bounds.BATCH_PIXELS // (r * r)} at {r} px)"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        return _build(cls, d, "").validate()

    def save(self, path: str | Path) -> None:
        """Write as JSON atomically (a killed writer never leaves a half config behind)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Config:
        p = Path(path)
        text = _read_config_file(p)
        _check_nesting(text, str(p))
        try:
            raw = yaml.safe_load(text) if p.suffix in (".yaml", ".yml") else json.loads(text)
        except (ValueError, yaml.YAMLError, RecursionError) as e:
            raise ConfigError(f"{p}: cannot read config: {_first_line(e)}") from None
        return cls.from_dict(raw or {})


def _read_config_file(p: Path) -> str:
    """The text of a config or preset file, refused unread when larger than bounds.CONFIG_FILE_MB."""
    try:
        if p.stat().st_size > bounds.CONFIG_FILE_MB << 20:
            raise ConfigError(f"{p}: a config file must be at most {bounds.CONFIG_FILE_MB} MiB, this one is larger")
        return p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config: {_first_line(e)}") from None


MAX_NESTING = 32
"""Brackets ([ and {) nested deeper than this in a config file or --set value are refused before YAML
parses them (PyYAML's time grows with the square of the depth: 2,000 took 9 s)."""


def _check_nesting(text: str, what: str) -> None:
    depth = deepest = 0
    for c in re.sub(r"[^\[\]{}]", "", text):
        depth = depth + 1 if c in "[{" else max(0, depth - 1)
        deepest = max(deepest, depth)
    if deepest > MAX_NESTING:
        raise ConfigError(f"{what}: brackets nested {deepest} deep; the limit is {MAX_NESTING}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


# --------------------------------------------------------------------------------------------
# Building from dicts, presets and overrides


def _build(cls: type, d: dict[str, Any], prefix: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(d).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(prefix + _field_name(u) for u in set(d) - names)
    if unknown:
        listed = ", ".join(u[:60] for u in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ConfigError(f"unknown config field(s): {listed}")
    kwargs = {}
    for name, value in d.items():
        t = hints[name]
        key = prefix + name
        kwargs[name] = (
            _build(t, value, key + ".") if isinstance(t, type) and is_dataclass(t) else _coerce(t, value, key)
        )
    return cls(**kwargs)


def _field_name(u: Any) -> str:
    """A field name as an error message shows it: as typed when plain, else quoted with escapes (one line)."""
    return u if isinstance(u, str) and u.isprintable() and len(u) <= 60 else bounds.shown(u)


def _coerce(t: Any, v: Any, key: str) -> Any:
    if get_origin(t) is not None:
        t = get_args(t)[0]
    if t is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in ("true", "false", "on", "off", "yes", "no", "1", "0"):
            return v.lower() in ("true", "on", "yes", "1")
    elif t is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
    elif t is float:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(v)
            except ValueError:
                pass
    elif t is str:
        if v is None:
            return ""
        if isinstance(v, bool):  # YAML 1.1 reads a bare on/off/yes/no as a bool: 'on'/'off' switches
            return "on" if v else "off"
        if isinstance(v, (str, int, float)):
            return str(v)
    raise ConfigError(f"{key} must be {t.__name__}, got {bounds.shown(v)}")


def preset_names() -> list[str]:
    files = resources.files("fakefacegen").joinpath("configs")
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A preset as a nested dict; ``name`` is a bundled preset name or a path to a YAML file."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        text = _read_config_file(p)
    else:
        f = resources.files("fakefacegen").joinpath("configs").joinpath(f"{name}.yaml")
        if not f.is_file():
            raise ConfigError(f"unknown preset {bounds.shown(name)}; available: {', '.join(preset_names())}")
        text = f.read_text()
    _check_nesting(text, f"preset {name}")
    try:
        d = yaml.safe_load(text) or {}
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        raise ConfigError(f"preset {name}: not valid YAML ({_first_line(e)})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"preset {name}: must be a mapping of sections, got {type(d).__name__}")
    base = d.pop("base", None)
    if base:
        if not isinstance(base, str) or base in _seen or len(_seen) >= 8:
            raise ConfigError(f"preset {name}: base {bounds.shown(base)} is not a preset name, or the bases loop")
        d = _merge(load_preset(base, (*_seen, name)), d)
    return d


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_override(d: dict[str, Any], item: str) -> dict[str, Any]:
    """Apply one ``section.field=value`` override (value parsed as YAML) to a nested dict."""
    if "=" not in item:
        raise ConfigError(f"override {bounds.shown(item)} must look like section.field=value")
    key, raw = item.split("=", 1)
    _check_nesting(raw, f"override {bounds.shown(key.strip())}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError, ValueError) as e:  # ValueError: an integer of over 4300 digits
        why = _first_line(e)
        raise ConfigError(f"override {bounds.shown(key.strip())}: the value is not valid YAML ({why})") from None
    parts = key.strip().split(".")
    cur = d
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
        if not isinstance(cur, dict):
            raise ConfigError(f"override {bounds.shown(item)}: {_field_name(p)} is not a section")
    cur[parts[-1]] = value
    return d


def make_config(preset: str | None = None, overrides: list[str] | None = None, **top: Any) -> Config:
    """Defaults <- preset <- ``top`` keyword fields (e.g. data=...) <- dotted overrides; validated."""
    d: dict[str, Any] = load_preset(preset) if preset else {}
    if preset:
        d["preset"] = preset
    for k, v in top.items():
        if v is not None:
            d[k] = v
    for item in overrides or []:
        apply_override(d, item)
    return Config.from_dict(d)


def _in_ranges(section: Any, prefix: str) -> None:
    """Every field of ``section`` with a documented range (bounds.CONFIG) in it, else a ConfigError naming it."""
    for f in fields(section):
        rng = bounds.CONFIG.get(f"{prefix}.{f.name}")
        if rng is not None:
            rng.check(f"{prefix}.{f.name}", getattr(section, f.name), ConfigError)


def _choice(name: str, v: str, options: tuple[str, ...]) -> None:
    if v not in options:
        raise ConfigError(f"{name} must be one of {', '.join(options)}; got {bounds.shown(v)}")
