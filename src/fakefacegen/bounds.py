"""The documented range of every number a user controls: command-line flags and config fields.

Each number is checked against its :class:`Range` before anything is allocated, started or written:
flags by argparse (:func:`flag`, so a bad value is a one-line ``error: --n must be an integer in
1..100000 (got 0)`` with exit code 2), config fields by ``Config.validate`` (a one-line
``ConfigError`` naming the field). SECURITY.md has the table; ``tests/test_bad_args.py`` checks that it
matches these values.

The walk limits are also the demo's request limits: ``demo/params.py`` (MAX_FRAMES, MAX_SCALE,
TRUNCATION_RANGE, SEED_MAX, FPS_RANGE) takes them from here, so the command line allows no walk the
demo would refuse for cost. They live here, not in the demo, because the command line must not import
the web stack (Starlette) that ``demo/params.py`` needs.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """Numbers from ``lo`` to ``hi``; integers unless ``integer`` is False (then finite floats, with
    open ends where ``lo_open``/``hi_open``); ``pow2``: powers of two only."""

    lo: float
    hi: float
    integer: bool = True
    lo_open: bool = False
    hi_open: bool = False
    pow2: bool = False

    def short(self) -> str:
        """'1..100000', '[0, 1)' or '(0, 1]': the range as the help texts and SECURITY.md write it."""
        if self.integer:
            return f"{_num(self.lo)}..{_num(self.hi)}"
        return f"{'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"

    def __str__(self) -> str:
        if self.pow2:
            return f"a power of two in {self.short()}"
        return f"{'an integer' if self.integer else 'a number'} in {self.short()}"

    def contains(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if self.integer and not isinstance(v, int):
            return False
        if not math.isfinite(v):
            return False
        lo_ok = v > self.lo if self.lo_open else v >= self.lo
        hi_ok = v < self.hi if self.hi_open else v <= self.hi
        return lo_ok and hi_ok and not (self.pow2 and int(v) & (int(v) - 1))

    def check(self, name: str, v: Any, error: type[Exception] = ValueError) -> Any:
        """``v`` if it is in the range, else ``error('NAME must be an integer in 1..10 (got V)')``."""
        if not self.contains(v):
            raise error(f"{name} must be {self} (got {shown(v)})")
        return v


def _num(x: float) -> str:
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:g}"


def shown(v: Any, limit: int = 40) -> str:
    """A value as an error message quotes it: numbers as typed, anything else as a short repr."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 128:
        text = f"an integer of {v.bit_length()} bits"  # repr of one over 4300 digits is itself an error
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        text = repr(v)
    elif isinstance(v, str) and _parses_as_number(v):
        text = v.strip()
    else:
        import reprlib

        r = reprlib.Repr()
        r.maxstring = r.maxother = limit
        try:
            text = r.repr(v)  # bounded: a nested or shared structure (a YAML alias bomb) is cut, not walked
        except ValueError:  # an integer of over 4300 digits inside
            text = f"<a {type(v).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parses_as_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


class FlagType:
    """An argparse ``type=``: the string as an int (or float) in ``rng``, else ArgumentTypeError, which
    ``cli`` prints as the one line ``error: --flag must be an integer in 1..10 (got 0)``."""

    def __init__(self, rng: Range):
        self.range = rng
        self.__name__ = "integer" if rng.integer else "number"

    def __eq__(self, other: object) -> bool:  # one meaning per range: shared flags compare equal
        return isinstance(other, FlagType) and other.range == self.range

    def __hash__(self) -> int:
        return hash(self.range)

    def __call__(self, text: str) -> int | float:
        try:
            v: int | float = int(text) if self.range.integer else float(text)
        except ValueError:
            v = math.nan  # not a number at all: reported with the range below
        if not self.range.contains(v):
            raise argparse.ArgumentTypeError(f"must be {self.range} (got {shown(text)})")
        return v


def flag(rng: Range) -> FlagType:
    return FlagType(rng)


def helped(text: str, rng: Range, default: Any) -> str:
    """A flag's help with its range and default: 'number of faces, 1..100000 (default 64)'."""
    return f"{text}, {rng.short()}" + ("" if default is None else f" (default {default})")


# ---- The demo's request limits, also interpolate's (demo/params.py takes them from here) -------------
SEED_MAX = 2**32 - 1
WALK_FRAMES_MAX = 64
SCALE_MAX = 8
TRUNCATION_LO, TRUNCATION_HI = 0.3, 1.0
FPS_LO, FPS_HI = 1.0, 60.0  # also the fps of the demo's /api/walk.gif
EDIT_AMOUNT_MAX = 5.0  # the demo's ``edit=NAME:AMOUNT``: |AMOUNT| at most this many sigmas (sliders span -3..+3,
# at most -4..+4; beyond 5 a 64 px DCGAN's face is mostly artefacts)
EDIT_ATTRS_MAX = 12  # attributes in one ``edit=`` (the step is a k x k solve; most larger sets are refused
# anyway as nearly parallel, see directions.MAX_GRAM_CONDITION)
EDIT_CHARS_MAX = 1000  # characters of one ``edit=`` value, checked before it is parsed

# ---- Command-line flags -------------------------------------------------------------------------------
SEED = Range(0, SEED_MAX)
"""--seed, --split-seed, each of interpolate's --seeds, train.seed."""
TRUNCATION = Range(TRUNCATION_LO, TRUNCATION_HI, integer=False)
"""--truncation: the bound of the truncated normal noise (smaller would redraw almost every value)."""
PSI = Range(0, 1, integer=False)
"""--psi: 1 = off, 0 = the average face."""
GENERATE_N = Range(1, 100_000)
"""generate -n: faces are made and written in batches, so memory does not grow with n (disk does)."""
EVAL_N = Range(2, 50_000)
"""evaluate/audit -n and eval.n: every fake is held in memory (n x R x R x 3 bytes: 0.6 GB at 64 px, 9.8 GB
at 256 px for 50,000); 50,000 is FID's usual protocol, 2 the fewest any statistic needs."""
SAMPLE_BATCH = Range(1, 1024)
"""--batch-size of the sampling commands (generate, evaluate)."""
WALK_FRAMES = Range(2, WALK_FRAMES_MAX)
"""interpolate --frames: frames per segment, both ends included."""
WALK_SEEDS_MAX = 64
"""interpolate --seeds: at most this many seeds."""
SCALE = Range(1, SCALE_MAX)
"""interpolate --scale."""
FPS = Range(FPS_LO, FPS_HI, integer=False)
"""interpolate --fps."""
WALK_BUDGET = WALK_FRAMES_MAX * SCALE_MAX**2
"""interpolate: frames in the walk x scale^2 at most this (4096: the demo's largest walk, 64 frames at
scale 8), so the animation and the grid hold at most 4096 generator-sized images: 0.8 GB each at 256 px."""
OPSET = Range(11, 20)
"""export --opset: 11 is the first with every op the networks use, 20 the TorchScript exporter's last."""
PORT = Range(0, 65535)
"""demo --port (0 = any free port)."""
THREADS = Range(1, 1024)
"""demo --threads."""
CACHE_MB = Range(1, 4096)
"""demo --cache-mb."""
PREPARE_SIZE = Range(32, 256, pow2=True)
"""prepare --size."""
WORKERS = Range(1, 256)
"""prepare --workers."""
HOLDOUT_FRACTION = Range(0, 1, integer=False, lo_open=True, hi_open=True)
"""audit --holdout-fraction."""
PERCENTILE = Range(0, 100, integer=False, lo_open=True, hi_open=True)
"""audit --percentile."""
PAIRS = Range(0, 100)
"""audit --pairs."""
PROJECT_STEPS = Range(0, 10_000)
"""project --steps (0 = the best starting latent only)."""
PROJECT_LR = Range(0, 10, integer=False, lo_open=True)
"""project --lr."""
PERCEPTUAL_WEIGHT = Range(0, 1000, integer=False)
"""project --perceptual-weight."""
CANDIDATES = Range(1, 1024)
"""project --candidates."""
LATENT_FILE_MB = 64
"""generate --latent: a latent file larger than this many MiB is refused before it is read."""
LATENTS_PER_FILE = Range(1, 1024)
"""generate --latent: latents in one file (each file's faces are made in one pass)."""
CONFIG_FILE_MB = 1
"""train --config / --preset FILE: a larger YAML or JSON file is refused before it is parsed."""

# ---- Config fields (config.py; train's --steps, --batch-size, --seed, --eval-every, --eval-n set them) ---
MAX_STEPS = 1_000_000_000  # steps cost time, not memory; the benchmarks use 10**9 for "never"
CONFIG: dict[str, Range] = {
    "model.resolution": Range(32, 256, pow2=True),
    "model.z_dim": Range(1, 1024),
    "model.width": Range(1, 1024),
    "model.max_width": Range(1, 1024),
    "model.mapping_layers": Range(1, 8),
    "g_opt.lr": Range(0, 1, integer=False, lo_open=True),
    "g_opt.beta1": Range(0, 1, integer=False, hi_open=True),
    "g_opt.beta2": Range(0, 1, integer=False, hi_open=True),
    "g_opt.momentum": Range(0, 1, integer=False, hi_open=True),
    "g_opt.weight_decay": Range(0, 1, integer=False),
    "train.steps": Range(1, MAX_STEPS),
    "train.batch_size": Range(1, 4096),
    "train.real_label": Range(0, 1, integer=False),
    "train.fake_label": Range(0, 1, integer=False),
    "train.ema": Range(0, 1, integer=False, hi_open=True),
    "train.ema_start": Range(0, MAX_STEPS),
    "train.r1_gamma": Range(0, 1000, integer=False),
    "train.r2_gamma": Range(0, 1000, integer=False),
    "train.r1_every": Range(1, 10_000),
    "train.seed": SEED,
    "train.log_every": Range(1, MAX_STEPS),
    "train.sample_every": Range(1, MAX_STEPS),
    "train.ckpt_every": Range(1, MAX_STEPS),
    "train.keep_checkpoints": Range(0, 1000),
    "train.threads": Range(0, 1024),
    "eval.every": Range(0, MAX_STEPS),
    "eval.n": EVAL_N,
}
for _f in ("lr", "beta1", "beta2", "momentum", "weight_decay"):
    CONFIG[f"d_opt.{_f}"] = CONFIG[f"g_opt.{_f}"]

WIDEST_LAYER = 1024
"""model: no layer of G or D has more feature maps (the DCGAN's widest is model.width x resolution / 8;
the style family's, min(model.width x resolution / 4, model.max_width))."""
FULL_RES_MAPS = 64 * 256**2
"""model: model.width x resolution^2 at most this (64 maps at 256 px, as StyleGAN2's; 1024 at 64 px), which
bounds the activations of the full-resolution layers."""
BATCH_PIXELS = 2**25
"""train: train.batch_size x resolution^2 at most this (batch 2048 at 128 px, 512 at 256 px)."""


def walk_frames(n_seeds: int, frames: int, loop: bool) -> int:
    """Frames of interpolate's walk (interpolate.walk_latents): segments x (frames - 1), + 1 unless looped."""
    segments = n_seeds if loop else n_seeds - 1
    return segments * (frames - 1) + (0 if loop else 1)
