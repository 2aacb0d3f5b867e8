"""The real-vs-real floor: FID/KID/precision/recall between two disjoint halves of a prepared dataset.

    python scripts/real_floor.py data/celeba64 --n 2000 --out runs/real-floor.json

The dataset's images are shuffled with ``--seed``; the first N play "real", the next N "fake". Any
generator scored with the same N and protocol cannot be expected to do better than this.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fakefacegen.metrics.evaluate import evaluate_images
from fakefacegen.prepare import load_images


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="prepared dataset directory")
    ap.add_argument("--n", type=int, default=2000, help="images per half (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--metrics", default="fid,kid,pr")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)

    images = load_images(args.data)
    if 2 * args.n > len(images):
        raise SystemExit(f"{args.data}: {len(images)} images, too few for two halves of {args.n}")
    order = np.random.default_rng(args.seed).permutation(len(images))
    a, b = np.asarray(images[np.sort(order[: args.n])]), np.asarray(images[np.sort(order[args.n : 2 * args.n])])
    r = evaluate_images(
        a, b, args.metrics.split(","), n=args.n, cache=False, seed=args.seed, kid_subset_size=min(1000, args.n)
    )
    r["protocol"]["halves"] = {"data": str(Path(args.data).resolve()), "n": args.n, "seed": args.seed}
    text = json.dumps(r, indent=2, default=str)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print({k: r.get(k) for k in ("fid", "kid", "kid_std", "precision", "recall")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
