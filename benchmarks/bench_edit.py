"""Time per attribute edit on the CPU: what a demo slider costs.

    python benchmarks/bench_edit.py                      # the bundled model and its directions, 1 thread
    python benchmarks/bench_edit.py --model runs/00002-style --directions d.json --threads 2

Cases, interleaved repeat by repeat (medians; see common.interleaved):

* ``render``: one face from its latent (``G.render``), the floor any edit pays;
* ``edit_latent``: the latent step alone (``editing.edit_latent``), with a new amount every call so the
  cached k x k solve is recomputed, as when a slider moves;
* ``edit_latent+keep``: two attributes edited, one kept (a 3 x 3 solve);
* ``edit+render``: the step and the face, what the demo does per slider move;
* ``G.edit``: the Python API from a seed and index (noise, step, face);
* ``strip7``: seven faces from -3 to +3 in one batch.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import header, interleaved, median

from fakefacegen.editing import edit_latent, latent_for, strip
from fakefacegen.generate import load_generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model (default: the bundled one)")
    ap.add_argument("--directions", default=None, help="directions file (default: the model's own)")
    ap.add_argument("--repeats", type=int, default=30, help="timed repeats per case (default 30)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    a = ap.parse_args()
    header("attribute edits: time per edit")
    torch.set_num_threads(a.threads)
    print(f"threads used here: {torch.get_num_threads()}")
    G = load_generator(a.model)
    dirs = G.directions(a.directions)
    attrs = dirs.attributes
    print(
        f"model: {G.source} ({G.family}, {G.resolution} px, edits in {G.edit_space}, {dirs.dim}-d); "
        f"{len(attrs)} attributes offered"
    )
    base = latent_for(G, seed=0, index=0)
    rng = np.random.default_rng(0)
    first, second, third = (attrs + attrs + attrs)[:3]

    def amount() -> float:
        return float(rng.uniform(-3, 3))

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    cases = {
        "render": lambda: timed(lambda: G.render(base)),
        "edit_latent": lambda: timed(lambda: edit_latent(dirs, base, {first: amount()})),
        "edit_latent+keep": lambda: timed(
            lambda: edit_latent(dirs, base, {first: amount(), second: amount()}, [third])
        ),
        "edit+render": lambda: timed(lambda: G.render(edit_latent(dirs, base, {first: amount()}))),
        "G.edit": lambda: timed(lambda: G.edit(seed=0, index=int(rng.integers(1000)), attrs={first: amount()})),
        "strip7": lambda: timed(lambda: strip(G, dirs, base, first, 3.0, 7)),
    }
    for c in cases.values():  # warm-up: oneDNN picks its kernels, the directions are cached
        c()
    res = interleaved(cases, a.repeats, verbose=False)
    print(f"\nmedian of {a.repeats} repeats:")
    for name, xs in res.items():
        print(f"  {name:<18s} {median(xs) * 1e3:9.3f} ms   (min {min(xs) * 1e3:.3f}, max {max(xs) * 1e3:.3f})")
    print(
        f"edit+render / render: {median(res['edit+render']) / median(res['render']):.3f}x; "
        f"the step alone is {median(res['edit_latent']) / median(res['edit+render']):.2%} of an edit"
    )


if __name__ == "__main__":
    main()
