"""The flags several subcommands share, each defined once: the same name, meaning and help wherever
it appears. A command adds the ones it takes; command-specific flags stay in its own module."""

from __future__ import annotations

import argparse
import re

from .. import bounds
from ..bounds import flag, helped

MODEL_HELP = "run directory, checkpoint .pt or generator .safetensors (default: the bundled model)"
DEVICES = "auto, cpu, cuda, cuda:N or mps"


def add_model(s: argparse.ArgumentParser, help: str = MODEL_HELP) -> None:
    """The optional positional ``model`` (None = the bundled model, unless ``help`` says otherwise)."""
    s.add_argument("model", nargs="?", default=None, help=help)


DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d{1,3})?"


def device_name(text: str) -> str:
    """argparse ``type`` of ``--device``: one of the documented forms (whether the machine has it is
    checked by ``runtime.select_device`` when the command starts, before anything is loaded)."""
    if not re.fullmatch(DEVICE_PATTERN, text):
        raise argparse.ArgumentTypeError(f"must be one of {DEVICES} (got {bounds.shown(text)})")
    return text


def add_device(s: argparse.ArgumentParser, default: str = "cpu") -> None:
    """``--device``: where the networks run. Training defaults to ``auto`` (the fastest device there is);
    sampling commands to ``cpu``, so the same seed gives the same pixels on every machine."""
    s.add_argument(
        "--device",
        type=device_name,
        default=default,
        help=f"{DEVICES}; auto picks CUDA, then MPS, then CPU (default {default})",
    )


def device_of(args: argparse.Namespace) -> str:
    """The ``--device`` value resolved the same way in every command ('auto' -> cuda, mps or cpu)."""
    from ..runtime import select_device

    return str(select_device(args.device))


def add_which(s: argparse.ArgumentParser) -> None:
    """``--which``: which checkpoint of a run directory a model is read from."""
    s.add_argument(
        "--which",
        choices=("latest", "best"),
        default="latest",
        help="checkpoint of a run directory: the latest, or the best by the evaluation metric (default latest)",
    )


def add_count(s: argparse.ArgumentParser, default: int, what: str, rng: bounds.Range = bounds.GENERATE_N) -> None:
    """``-n/--n``: how many images, in ``rng``."""
    s.add_argument("-n", "--n", type=flag(rng), default=default, help=helped(what, rng, default))


def add_seed(s: argparse.ArgumentParser) -> None:
    """``--seed`` of the generated images: row i of the noise depends only on (seed, i)."""
    s.add_argument(
        "--seed",
        type=flag(bounds.SEED),
        default=0,
        help=helped("seed of the generated faces: the same seed gives the same faces", bounds.SEED, 0),
    )


def add_truncation(s: argparse.ArgumentParser) -> None:
    """``--truncation`` (of the noise) and ``--psi`` (towards the average latent)."""
    s.add_argument(
        "--truncation",
        type=flag(bounds.TRUNCATION),
        default=None,
        help=f"redraw noise values beyond this bound (truncated normal), {bounds.TRUNCATION.short()}, e.g. 0.7 "
        "(default off)",
    )
    s.add_argument(
        "--psi",
        type=flag(bounds.PSI),
        default=1.0,
        help=f"truncation towards the average latent, {bounds.PSI.short()}: 1 = off (default), e.g. 0.7 for "
        "cleaner, less varied faces (in W for the style family, towards z = 0 for the DCGAN)",
    )


def add_batch_size(s: argparse.ArgumentParser, default: int) -> None:
    """``--batch-size`` of a sampling command: images per forward pass."""
    rng = bounds.SAMPLE_BATCH
    s.add_argument("--batch-size", type=flag(rng), default=default, help=helped("images per pass", rng, default))


def add_quiet(s: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bar."""
    s.add_argument("--quiet", action="store_true", help="no progress bar")


def subcommand(
    sub: argparse._SubParsersAction, name: str, desc: str, examples: str | None = None
) -> argparse.ArgumentParser:
    """A new subparser with ``desc`` as its help and description and ``examples`` as its epilog."""
    return sub.add_parser(
        name, help=desc, description=desc, epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter
    )
