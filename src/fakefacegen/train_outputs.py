"""What a training run writes besides its log: checkpoints (and the roll-back to the last one when
training diverged), the exported generator, the sample grids and the evaluations with the best
checkpoint; and, when a run goes back to a checkpoint (resume, roll-back), the records cut back to
its step, so that every step is in the log once. Rank 0 writes; the other processes wait at the
barriers."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import distributed as dist
from .atomic import atomic_save, fsync_path
from .checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_generator_file,
    prune_checkpoints,
    save_checkpoint,
    save_generator,
)
from .data import FaceDataset
from .divergence import DivergenceError, nonfinite_param
from .images import save_grid, to_uint8
from .randomness import EVAL_SEED, seeded_rng
from .rundir import RunDir, append_log, cut_log, write_status
from .train_state import TrainerState

if TYPE_CHECKING:
    from .metrics import TrainingEvaluator

MAX_ROLLBACKS = 3
"""train.on_nan=rollback gives up (DivergenceError) after this many roll-backs in one run."""


class TrainerOutputs(TrainerState):
    """The Trainer's writing side (the Trainer sets these attributes up)."""

    is_main: bool
    run_dir: Path
    files: RunDir
    dataset: FaceDataset
    grid_z: torch.Tensor

    def _diverged(self, what: str) -> None:
        """Roll back to the last checkpoint with fresh noise (train.on_nan=rollback), or raise DivergenceError."""
        ck = latest_checkpoint(self.run_dir)
        if self.cfg.train.on_nan == "rollback" and ck is not None and self.rollbacks < MAX_ROLLBACKS:
            self.rollbacks += 1
            if self.is_main:
                print(
                    f"warning: {what}; rolling back to {ck.name} with fresh noise "
                    f"(rollback {self.rollbacks} of {MAX_ROLLBACKS})",
                    file=sys.stderr,
                )
            state = load_checkpoint(ck, map_location=self.device)
            rollbacks = self.rollbacks
            self._load_state(state, self.g_net, self.d_net, source=ck)
            self.rollbacks = rollbacks
            if self.is_main:
                self._forget_after(self.step, ck)
            return
        raise DivergenceError(
            f"training diverged: {what}; no checkpoint was overwritten"
            + ("" if ck is None else f"; the last good one is {ck}")
        )

    def _forget_after(self, step: int, source: Path | None) -> None:
        """The run goes on from ``source``, the checkpoint of ``step``: cut the log (train, eval and
        audit records) back to that step, and replace a best.pt of a later step (a timeline given
        up) by the checkpoint of the best step still known (removed when that one is gone)."""
        removed = cut_log(self.files.log, step)
        if removed:
            print(
                f"note: {self.files.log}: {removed} line(s) after step {step} removed (written after "
                f"{source.name if source else 'the start'}; those steps are trained again)",
                file=sys.stderr,
            )
        best = self.files.best_checkpoint
        try:
            best_step = load_checkpoint(best)["step"] if best.is_file() else None
        except CheckpointError:
            return  # unreadable: left for the user to see (generate says why)
        if best_step is None or best_step <= step:
            return
        keep = self.files.checkpoint(self.best["step"]) if self.best.get("step") else None
        if keep is not None and keep.is_file():
            src = keep

            def copy(tmp: Path) -> None:
                shutil.copyfile(src, tmp)

            atomic_save(best, copy)
            print(
                f"note: {best}: was of step {best_step}, now {keep.name} (the best up to step {step})", file=sys.stderr
            )
        else:
            best.unlink()
            fsync_path(best.parent)
            print(f"note: {best}: of step {best_step}, after step {step}; removed", file=sys.stderr)

    def _checkpoint(self, final: bool) -> None:
        if not self.is_main:
            dist.barrier()
            return
        bad = nonfinite_param(self.g_net) or nonfinite_param(self.d_net)
        if bad:
            raise DivergenceError(
                f"training diverged: weight {bad} is NaN/Inf at step {self.step}; no checkpoint was written"
            )
        fsync_path(self.files.log)  # the log's records up to this step are on disk before the checkpoint
        save_checkpoint(self.state_dict(), self.files.checkpoint(self.step))
        prune_checkpoints(self.run_dir, self.cfg.train.keep_checkpoints)
        if final:
            self._export_generator()
        write_status(self.run_dir, "running" if not final else "complete", step=self.step)
        dist.barrier()

    def _export_generator(self) -> None:
        from .stylegan import StyleGenerator

        g = self.sampling_generator()
        if isinstance(g, StyleGenerator):  # the style family's truncation centre, for these weights
            g.compute_w_avg()
        save_generator(
            g.state_dict(),
            json.loads(json.dumps(self.cfg.to_dict()["model"])),
            self.files.generator,
            meta={"images_seen": self.images_seen, "step": self.step, "ema": self.g_ema is not None},
        )

    def _exported_step(self) -> int | None:
        try:
            return load_generator_file(self.files.generator)[2].get("step")
        except CheckpointError:
            return None

    def _write_grids(self, real: bool = False) -> None:
        if real:
            idx = list(range(min(64, len(self.dataset))))
            save_grid(self.dataset.__getitems__(idx).numpy(), self.files.real_grid, nrow=8)
            self._write_grids()
            return
        images = to_uint8(self.sample(self.grid_z))
        save_grid(images, self.files.fakes_grid(self.step), nrow=8)

    def _evaluate(self, evaluator: TrainingEvaluator) -> None:
        n = self.cfg.eval.n
        z_all = torch.randn(n, self.cfg.model.z_dim, generator=seeded_rng(EVAL_SEED))

        def sample_fn(count: int, seed: int = 0):  # noqa: ARG001 - fixed noise regardless of seed
            return to_uint8(self.sample(z_all[:count]))

        res = evaluator(sample_fn)
        rec = {"kind": "eval", "step": self.step, "images_seen": self.images_seen, **res}
        append_log(self.files.log, rec)
        key = self.cfg.eval.metric
        value = res[key] if not isinstance(res[key], (list, tuple)) else res[key][0]
        if not self.best or value < self.best["value"]:
            self.best = {"metric": key, "value": value, "step": self.step}
            save_checkpoint(self.state_dict(), self.files.best_checkpoint)
            print(f"\nstep {self.step}: {key} {value:.3f} (new best)", file=sys.stderr)
