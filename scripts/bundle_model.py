"""Package a run's generator as the bundled model: EMA weights, float16 safetensors, metrics in metadata.

    python scripts/bundle_model.py RUN_DIR|CHECKPOINT|GENERATOR.safetensors [--eval eval.json]
        [--out src/fakefacegen/assets/celeba64.safetensors]

The checkpoint's EMA generator (BatchNorm statistics re-estimated for the EMA weights) is written in
float16 with its model config and provenance (images seen, steps, recipe, metrics with their protocol)
in the safetensors metadata, which `fakefacegen demo` and the model card read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fakefacegen.checkpoint import latest_checkpoint, load_checkpoint, load_generator_file, save_generator
from fakefacegen.generate import load_generator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "run_dir", help="run directory (its latest checkpoint), one checkpoint file, or a generator .safetensors"
    )
    p.add_argument("--eval", default=None, help="JSON written by `fakefacegen evaluate --out`")
    p.add_argument("--out", default="src/fakefacegen/assets/celeba64.safetensors")
    p.add_argument("--name", default="fakefacegen-celeba64")
    p.add_argument("--preset", default=None, help="record this preset name (default: the checkpoint's)")
    a = p.parse_args()
    src = Path(a.run_dir)
    if src.suffix == ".safetensors":
        # A generator file already bundled elsewhere (e.g. on a lent GPU, which returns files of at
        # most 16 MB, so no full checkpoint): keep its weights and provenance, add the metrics.
        state, model_cfg, meta = load_generator_file(src)
        what = f"{src} (step {meta.get('step')}, {meta.get('images_seen')} images seen)"
    else:
        ck_path = src if src.is_file() else latest_checkpoint(src)
        if ck_path is None:
            raise SystemExit(f"error: {a.run_dir}: no checkpoint")
        ck = load_checkpoint(ck_path)
        G = load_generator(ck_path)  # EMA weights with re-estimated BatchNorm statistics
        state, model_cfg = G.net.state_dict(), ck["config"]["model"]
        meta = {
            "images_seen": ck["images_seen"],
            "step": ck["step"],
            "ema": G.meta.get("ema"),
            "preset": ck["config"].get("preset"),
            "train_elapsed_s": round(ck.get("elapsed_s", 0.0)),
            "source_checkpoint": ck_path.name,
        }
        what = f"{ck_path} (step {ck['step']}, {ck['images_seen']} images seen)"
    meta["name"] = a.name
    if a.preset:
        meta["preset"] = a.preset
    if a.eval:
        ev = json.loads(Path(a.eval).read_text())
        for k in ("fid", "kid", "kid_std"):
            if k in ev:
                meta[k] = ev[k]
        meta["fid_n"] = ev.get("protocol", {}).get("n_fake")
        meta["protocol"] = ev.get("protocol")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_generator(state, model_cfg, out, dtype=torch.float16, meta=meta)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) from {what}")


if __name__ == "__main__":
    main()
