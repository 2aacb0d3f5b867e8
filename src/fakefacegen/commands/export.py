"""``fakefacegen export``: a generator as ONNX and/or TorchScript, checked against PyTorch."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .. import bounds
from ..bounds import flag, helped
from ..export import CHECK_BATCHES, DEFAULT_OPSET
from . import UsageError
from .flags import add_model, add_which, subcommand

EXAMPLES = """examples:
  fakefacegen export --format onnx --out export/               # the bundled model -> export/generator.onnx
  fakefacegen export runs/00001-celeba64 --format both --out export/
  fakefacegen export model.safetensors --format torchscript --out export/

Using the ONNX file (needs only onnxruntime and numpy):
  import numpy as np, onnxruntime as ort
  sess = ort.InferenceSession("export/generator.onnx")
  z = np.random.default_rng(0).standard_normal((16, sess.get_inputs()[0].shape[1])).astype(np.float32)
  faces = ((sess.run(None, {"z": z})[0] + 1) * 127.5).round().clip(0, 255).astype(np.uint8)  # (16, 3, R, R)"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = subcommand(
        sub,
        "export",
        "Export a generator to ONNX and/or TorchScript, checked against PyTorch on the same noise.",
        EXAMPLES,
    )
    add_model(s)
    s.add_argument(
        "--format",
        default="onnx",
        choices=("onnx", "torchscript", "both"),
        help="what to write (default onnx; onnx needs: pip install fakefacegen[export])",
    )
    s.add_argument("--out", default="export", help="output directory (default export/)")
    s.add_argument(
        "--opset",
        type=flag(bounds.OPSET),
        default=DEFAULT_OPSET,
        help=helped("ONNX opset", bounds.OPSET, DEFAULT_OPSET),
    )
    add_which(s)
    s.set_defaults(func=run)
    return s


def run(args: argparse.Namespace) -> int:
    from ..export import export_model

    if args.format == "torchscript" and args.opset != DEFAULT_OPSET:
        raise UsageError("--opset is for ONNX; it does nothing with --format torchscript")
    t0 = time.perf_counter()
    reports = export_model(args.model, args.out, args.format, opset=args.opset, which=args.which)
    for fmt, r in reports.items():
        print(
            f"wrote {Path(args.out) / r['file']} ({fmt}): max abs difference from PyTorch "
            f"{r['check']['max_abs_diff']:.3g} over batches {','.join(map(str, CHECK_BATCHES))}; "
            f"details in {r['json']}"
        )
    print(f"done in {time.perf_counter() - t0:.1f}s")
    return 0
