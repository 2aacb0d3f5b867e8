"""``fakefacegen train``: a new run from a preset (or a saved config), or ``--resume`` of one."""

from __future__ import annotations

import argparse
import json
import sys

from .. import bounds
from ..bounds import flag
from . import UsageError
from .flags import add_device, add_quiet, subcommand

EXAMPLES = """examples:
  fakefacegen train --data data/celeba64 --preset celeba64 --steps 5000
  fakefacegen train --data data/celeba64 --preset celeba64 --set train.ema=0.999 --set train.augment=color,translation
  fakefacegen train --resume runs/00001-celeba64
  fakefacegen train --data data/celeba64 --preset celeba64 --dry-run
  torchrun --nproc_per_node=4 -m fakefacegen train --data data/celeba64 --preset celeba64"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = subcommand(sub, "train", "Train a GAN; every run gets a new directory under --outdir.", EXAMPLES)
    s.add_argument("--data", help="prepared dataset directory")
    s.add_argument("--preset", default=None, help="config preset name or YAML file (debug, celeba64, celeba128, ...)")
    s.add_argument("--config", default=None, help="a saved config.json/.yaml to start from (instead of --preset)")
    # Shorthands for --set: they override the preset's train.steps, train.batch_size, train.seed, eval.*,
    # with the config fields' ranges (bounds.CONFIG).
    s.add_argument(
        "--steps", type=_field("train.steps"), default=None, help=_help("total training steps", "train.steps")
    )
    s.add_argument(
        "--batch-size",
        type=_field("train.batch_size"),
        default=None,
        help=_help("global batch size", "train.batch_size"),
    )
    s.add_argument("--seed", type=_field("train.seed"), default=None, help=_help("training seed", "train.seed"))
    s.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one config field, e.g. --set train.ema=0.999 (repeatable)",
    )
    s.add_argument(
        "--eval-every",
        type=_field("eval.every"),
        default=None,
        help=_help("steps between FID evaluations (0 = off)", "eval.every"),
    )
    s.add_argument("--eval-n", type=_field("eval.n"), default=None, help=_help("images per evaluation", "eval.n"))
    s.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue a run from its last checkpoint (with its saved config: only --steps, --device and --quiet "
        "may be given with it)",
    )
    s.add_argument("--outdir", default=None, help="where run directories are created (default runs/)")
    s.add_argument("--name", default=None, help="run name (default: the preset name)")
    add_device(s, default="auto")
    s.add_argument("--dry-run", action="store_true", help="print the resolved config and model sizes, then exit")
    add_quiet(s)
    s.set_defaults(func=run)
    return s


def _field(name: str) -> bounds.FlagType:
    return flag(bounds.CONFIG[name])


def _help(text: str, name: str) -> str:
    return f"{text}, {bounds.CONFIG[name].short()} (overrides the preset's {name})"


# What --resume keeps from the saved run: every flag that would change it is refused, not ignored.
RESUME_ALLOWS = ("--steps", "--device", "--quiet")


def _ignored_on_resume(a: argparse.Namespace) -> list[str]:
    given = {
        "--data": a.data,
        "--preset": a.preset,
        "--config": a.config,
        "--set": a.set,
        "--batch-size": a.batch_size,
        "--seed": a.seed,
        "--eval-every": a.eval_every,
        "--eval-n": a.eval_n,
        "--outdir": a.outdir,
        "--name": a.name,
        "--dry-run": a.dry_run,
    }
    return [f for f, v in given.items() if v not in (None, False, [])]


def _config(a: argparse.Namespace):
    from ..config import Config, apply_override, make_config

    overrides = list(a.set)
    for value, key in (
        (a.steps, "train.steps"),
        (a.batch_size, "train.batch_size"),
        (a.seed, "train.seed"),
        (a.eval_every, "eval.every"),
        (a.eval_n, "eval.n"),
    ):
        if value is not None:
            overrides.append(f"{key}={value}")
    if not a.config:
        return make_config(a.preset, overrides, data=a.data)
    base = Config.load(a.config).to_dict()
    for o in overrides:
        apply_override(base, o)
    if a.data:
        base["data"] = a.data
    return Config.from_dict(base)


def run(a: argparse.Namespace) -> int:
    if a.resume:
        # Only the step budget may change on resume; anything else would not be the same run.
        ignored = _ignored_on_resume(a)
        if ignored:
            raise UsageError(
                f"--resume continues a run with its saved config, so {', '.join(ignored)} would be ignored; "
                f"only {', '.join(RESUME_ALLOWS)} may be given with it"
            )
    elif a.config and a.preset:
        raise UsageError("give --config FILE or --preset NAME, not both (--config is a whole saved config)")
    from ..runtime import select_device
    from ..train import DivergenceError, Trainer, TrainingInterrupted

    select_device(a.device)  # a missing CUDA/MPS is a one-line error before any run folder is made
    if a.resume:
        trainer = Trainer(resume=a.resume, device=a.device, progress=not a.quiet)
        if a.steps is not None:
            trainer.cfg.train.steps = a.steps
    else:
        cfg = _config(a)
        if a.dry_run:
            return _dry_run(cfg)
        trainer = Trainer(cfg, outdir=a.outdir or "runs", name=a.name, device=a.device, progress=not a.quiet)
    try:
        run_dir = trainer.run()
    except TrainingInterrupted as e:
        if trainer.is_main:
            print(
                f"{e}; checkpoint written. Resume with: fakefacegen train --resume {trainer.run_dir}", file=sys.stderr
            )
        return 128 + e.signum
    except DivergenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    if trainer.is_main:
        print(f"done: {run_dir} (step {trainer.step}, {trainer.images_seen} images seen)")
    return 0


def _dry_run(cfg) -> int:
    from ..models import build_models

    g, d = build_models(cfg.model)
    print(json.dumps(cfg.to_dict(), indent=2))
    ng, nd = (sum(p.numel() for p in m.parameters()) for m in (g, d))
    print(f"Generator: {ng:,} parameters; Discriminator: {nd:,} parameters")
    print(g)
    print(d)
    return 0
