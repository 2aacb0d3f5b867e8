"""Which feature space finds copies? Pixels vs FID Inception vs dlib identity, on real faces.

Takes a prepared dataset, a seeded split into a training index, held-out faces and copies of
training faces altered the way a generator's copy might be (mirrored, shifted 2 px, noise, blur,
JPEG). Reports, per space: CPU seconds per face, the 1st percentile of held-out-to-train nearest
distances (the audit's copy threshold), and per alteration the share of copies whose nearest training
face is their source (top1), the share below the threshold, and the median copy distance / threshold.
Two dlib variants: ``identity`` (the audit's: 5-point landmarks in a fixed box of the 4x upsampled
crop, then dlib's aligned chip) and ``identity-unaligned`` (the crop resized to 150 px as the chip).

    python benchmarks/bench_audit_spaces.py data/celeba64 --train 300 --held 100 --copies 40
"""

from __future__ import annotations

import argparse
import io
import json
import time

import numpy as np
import torch
from PIL import Image, ImageFilter

from fakefacegen.audit import nearest
from fakefacegen.audit.spaces import PixelSpace
from fakefacegen.dataset_format import load_images

KINDS = ("flip", "shift2", "noise8", "blur1", "jpeg50")


def alter(a: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    im = Image.fromarray(a)
    if kind == "flip":
        return a[:, ::-1].copy()
    if kind == "shift2":
        return np.roll(a, (2, -2), (0, 1))
    if kind == "noise8":
        return np.clip(a + rng.normal(0, 8, a.shape), 0, 255).astype(np.uint8)
    if kind == "blur1":
        return np.asarray(im.filter(ImageFilter.GaussianBlur(1.0)))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=50)
    return np.asarray(Image.open(buf).convert("RGB"))


def spaces() -> dict:
    from fakefacegen.audit.identity import IdentityEmbedder
    from fakefacegen.metrics.features import FeatureExtractor

    ident = IdentityEmbedder()
    fx = FeatureExtractor(batch_size=32, threads=1)

    def unaligned(b: np.ndarray) -> np.ndarray:
        chips = [np.asarray(Image.fromarray(a).resize((150, 150), Image.Resampling.BICUBIC)) for a in b]
        return np.stack([np.asarray(ident._net.compute_face_descriptor(c)) for c in chips]).astype(np.float32)

    return {
        "pixel": lambda b: PixelSpace.transform(b),
        "inception": lambda b: fx(b).astype(np.float32),
        "identity": ident.embed,
        "identity-unaligned": unaligned,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--held", type=int, default=100)
    ap.add_argument("--copies", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    imgs = load_images(a.data)
    rng = np.random.default_rng(a.seed)
    idx = rng.permutation(len(imgs))
    train = np.array(imgs[np.sort(idx[: a.train])])
    held = np.array(imgs[np.sort(idx[a.train : a.train + a.held])])
    src = rng.choice(a.train, a.copies, replace=False)
    copies = {k: np.stack([alter(train[i], k, rng) for i in src]) for k in KINDS}
    out = {}
    for name, embed in spaces().items():
        t0 = time.process_time()
        ft = embed(train)
        r = {"cpu_s_per_face": (time.process_time() - t0) / len(train)}
        d_held, _ = nearest(embed(held), ft)
        p1 = float(np.percentile(d_held, 1))
        r["held_p1"] = p1
        for k in KINDS:
            d, i = nearest(embed(copies[k]), ft)
            r[k] = {
                "top1": float((i == src).mean()),
                "below_p1": float((d < p1).mean()),
                "median_over_p1": float(np.median(d) / p1),
            }
        out[name] = r
        print(name, json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
