"""``fakefacegen prepare``: face photos (folders or zips) -> one uint8 dataset directory."""

from __future__ import annotations

import argparse

from .. import bounds
from ..bounds import flag, helped
from .flags import add_quiet, subcommand

EXAMPLES = """examples:
  fakefacegen prepare ~/data/img_align_celeba --size 64 --out data/celeba64
  fakefacegen prepare img_align_celeba.zip other_faces/ --size 128 --out data/faces128"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = subcommand(
        sub, "prepare", "Face photos (folders or zips) -> center crop -> resize -> one uint8 dataset file.", EXAMPLES
    )
    s.add_argument("sources", nargs="+", help="folders (searched recursively) or .zip files of JPEG/PNG/WebP images")
    s.add_argument("--out", required=True, help="output dataset directory (images.npy + manifest.json)")
    s.add_argument(
        "--size",
        type=flag(bounds.PREPARE_SIZE),
        default=64,
        help=helped("output side in pixels, a power of two", bounds.PREPARE_SIZE, 64),
    )
    s.add_argument(
        "--workers",
        type=flag(bounds.WORKERS),
        default=None,
        help=helped("worker processes", bounds.WORKERS, None) + " (default: all cores)",
    )
    s.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    add_quiet(s)
    s.set_defaults(func=run)
    return s


def run(a: argparse.Namespace) -> int:
    from ..prepare import prepare_dataset

    m = prepare_dataset(
        a.sources if len(a.sources) > 1 else a.sources[0],
        a.out,
        size=a.size,
        workers=a.workers,
        overwrite=a.overwrite,
        progress=not a.quiet,
    )
    print(
        f"{a.out}: {m['count']} images of {m['size']}x{m['size']}, {len(m['skipped'])} skipped, "
        f"{m.get('images_per_s', 0):.0f} images/s"
    )
    for s in m["skipped"][:10]:
        print(f"  skipped {s['path']}: {s['reason']}")
    if len(m["skipped"]) > 10:
        print(f"  ... and {len(m['skipped']) - 10} more (see {a.out}/manifest.json)")
    return 0
