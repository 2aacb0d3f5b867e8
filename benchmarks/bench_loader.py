"""Data loading: can the loader feed the training step? Batches/s delivered vs batches/s consumed.

    python benchmarks/bench_loader.py                      # 64 px, batch 128, ~3 min on a loaded 2-core box
    python benchmarks/bench_loader.py --batches 50 --repeats 5 --step-repeats 5
    python benchmarks/bench_loader.py --no-step            # loader figures only (seconds)

(1) What the loader delivers, as the Trainer does it (in its own process, no workers): the step's
    indices from StepBatchSampler, one FaceDataset.__getitems__ copy from the memory-mapped
    images.npy, the per-step flip draw, and to_model_input (flip, NHWC uint8 -> float in [-1, 1],
    channels_last). Also through make_loader (the DataLoader wrapper) for comparison.
(2) What the step consumes: the real Trainer step with its real data path vs the same step with
    the data path replaced by a cached batch (a synthetic tensor reused), interleaved, medians.
Target: the loader delivers >= 10x the batches/s the step consumes, and the step with real data
is no slower than with the cached batch beyond noise.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import torch  # noqa: E402
from bench_train import make_trainer, trainer_run
from common import dataset_for, header, interleaved, median

import fakefacegen.gan_step as gan_step_mod  # noqa: E402
import fakefacegen.train as train_mod  # noqa: E402
from fakefacegen.data import FaceDataset, StepBatchSampler, make_loader, step_generator, to_model_input  # noqa: E402
from fakefacegen.runtime import choose_fast_path  # noqa: E402


def to_model_input_rowflip(
    batch: torch.Tensor, *, device: torch.device, channels_last: bool, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """Proposed data.to_model_input: flips row by row on the uint8 batch instead of a broadcast
    torch.where over the whole (B, S, S, 3) batch; bit-identical output (checked in main)."""
    if flip is not None and bool(flip.any()):
        batch = batch.clone()
        for i in flip.nonzero().flatten().tolist():
            batch[i] = batch[i].flip(1)
    x = batch.to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def inline_batches(
    ds: FaceDataset, batch: int, n: int, start: int, channels_last: bool, convert=to_model_input
) -> float:
    """Seconds for ``n`` batches made exactly as Trainer._loop makes them (steps start..start+n-1)."""
    sampler = StepBatchSampler(len(ds), batch, seed=0)
    dev = torch.device("cpu")
    t0 = time.perf_counter()
    for step in range(start, start + n):
        b = ds.__getitems__(sampler.indices(step))
        flip = torch.rand(batch, generator=step_generator(0, step, train_mod.STREAM_FLIP)) < 0.5
        x = convert(b, device=dev, channels_last=channels_last, flip=flip)
    assert x.shape == (batch, 3, ds.resolution, ds.resolution)
    return time.perf_counter() - t0


def loader_batches(ds: FaceDataset, batch: int, n: int, start: int, channels_last: bool) -> float:
    """Seconds for ``n`` batches through make_loader (a DataLoader, no workers) + flips + to_model_input."""
    it = iter(make_loader(ds, batch, seed=0, start_step=start))
    dev = torch.device("cpu")
    t0 = time.perf_counter()
    for step in range(start, start + n):
        b = next(it)
        flip = torch.rand(batch, generator=step_generator(0, step, train_mod.STREAM_FLIP)) < 0.5
        x = to_model_input(b, device=dev, channels_last=channels_last, flip=flip)
    assert x.shape == (batch, 3, ds.resolution, ds.resolution)
    return time.perf_counter() - t0


@contextlib.contextmanager
def cached_data(tr: train_mod.Trainer):
    """Replace the Trainer's data path by one precomputed batch (what a synthetic-tensor loop does)."""
    b = tr.dataset.__getitems__(list(range(tr.local_batch)))
    x = to_model_input(b, device=tr.device, channels_last=tr.fast.channels_last)
    orig_get, orig_tmi = tr.dataset.__getitems__, gan_step_mod.to_model_input
    tr.dataset.__getitems__ = lambda idx: b
    gan_step_mod.to_model_input = lambda *a, **k: x  # the GAN step converts the batch (gan_step.py)
    try:
        yield
    finally:
        tr.dataset.__getitems__ = orig_get
        gan_step_mod.to_model_input = orig_tmi


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--batches", type=int, default=20, help="batches per loader repeat (default 20)")
    ap.add_argument("--repeats", type=int, default=5, help="loader repeats, medians reported (default 5)")
    ap.add_argument("--step-repeats", type=int, default=3, help="training-step repeats per case (default 3)")
    ap.add_argument("--steps", type=int, default=1, help="training steps per repeat (default 1)")
    ap.add_argument("--no-step", action="store_true", help="skip the training-step measurement")
    args = ap.parse_args(argv)

    header("bench_loader: FaceDataset + StepBatchSampler + to_model_input vs the training step")
    fast = choose_fast_path(torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="bench_loader-") as tmp:
        data, what = dataset_for(args.res, Path(tmp), n=max(4 * args.batch, 1024))
        ds = FaceDataset(data)
        print(
            f"data: {what}, {len(ds)} images of {ds.resolution} px; batch {args.batch}; "
            f"channels_last {fast.channels_last}"
        )
        # Warm the page cache over what the timed repeats read (a run's first epoch reads from disk once).
        inline_batches(ds, args.batch, min(len(ds) // args.batch, args.batches * args.repeats), 0, fast.channels_last)
        pos = {"inline": 0, "loader": 0, "rowflip": 0}

        def case(kind: str):
            def run() -> float:
                if kind == "loader":
                    s = loader_batches(ds, args.batch, args.batches, pos[kind], fast.channels_last)
                else:
                    s = inline_batches(
                        ds,
                        args.batch,
                        args.batches,
                        pos[kind],
                        fast.channels_last,
                        to_model_input_rowflip if kind == "rowflip" else to_model_input,
                    )
                pos[kind] += args.batches  # successive repeats read successive steps, like training
                return s / args.batches

            return run

        g = torch.Generator().manual_seed(1)
        b = ds.__getitems__(list(range(args.batch)))
        for cl in (True, False):
            f = torch.rand(args.batch, generator=g) < 0.5
            same = torch.equal(
                to_model_input(b, device=torch.device("cpu"), channels_last=cl, flip=f),
                to_model_input_rowflip(b, device=torch.device("cpu"), channels_last=cl, flip=f),
            )
            assert same, "the row-by-row flip differs from data.to_model_input"
        labels = {
            "inline": "Trainer inline data path",
            "loader": "make_loader + to_model_input",
            "rowflip": "inline, row-by-row flip (prop.)",
        }
        print(f"loader: {args.repeats} interleaved repeats of {args.batches} batches (ms/batch)")
        lt = interleaved({labels[k]: case(k) for k in labels}, args.repeats, verbose=False)
        med = {k: median(lt[labels[k]]) for k in labels}
        for k, label in labels.items():
            print(
                f"  {label:<32s}: {1 / med[k]:8.1f} batches/s  ({args.batch / med[k]:9.0f} img/s, "
                f"{1e3 * med[k]:.1f} ms/batch)"
            )
        print(
            f"  proposed row-by-row flip vs data.to_model_input: {med['inline'] / med['rowflip']:.2f}x "
            f"(bit-identical output)"
        )
        t_inline = med["inline"]
        if args.no_step:
            return 0

        tr = make_trainer(args.res, args.batch, data, Path(tmp), "loader", [])
        tr_cached = make_trainer(args.res, args.batch, data, Path(tmp), "cached", [])
        print(f"training step: {tr.fast.describe()}")

        def cached_case() -> float:
            with cached_data(tr_cached):
                return trainer_run(tr_cached, args.steps)

        trainer_run(tr, 1)  # warm-up
        cached_case()
        print(f"training step: {args.step_repeats} interleaved repeats of {args.steps} step(s)")
        st = interleaved(
            {"step, real data path": lambda: trainer_run(tr, args.steps), "step, cached batch": cached_case},
            args.step_repeats,
            unit="s/step",
        )
        t_real, t_cached = median(st["step, real data path"]), median(st["step, cached batch"])
        tr.lock.release()
        tr_cached.lock.release()
        print(f"\nresult {args.res}x{args.res} batch {args.batch} (medians):")
        print(f"  step with the real data path : {t_real:7.2f} s/step ({args.batch / t_real:.1f} img/s)")
        print(f"  step with a cached batch     : {t_cached:7.2f} s/step ({args.batch / t_cached:.1f} img/s)")
        print(f"  real / cached step time      : {t_real / t_cached:.3f} (1.0 = the loader costs nothing)")
        print(
            f"  data path share of the step  : {100 * t_inline / t_real:.2f}% ({1e3 * t_inline:.1f} ms of "
            f"{t_real:.2f} s)"
        )
        print(
            f"HEADLINE loader delivers {1 / t_inline:.1f} batches/s, the step consumes {1 / t_real:.3f}: "
            f"{t_real / t_inline:.0f}x headroom (target >= 10x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
