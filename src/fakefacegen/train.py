"""Training: set-up (``Trainer.__init__``) kept apart from one readable loop (``Trainer.run``).

Every step is one discriminator update and one generator update on a global batch. Everything
random in a step (data order, flips, noise, augmentation) is drawn from generators seeded by
(seed, step), so a run resumed from a checkpoint repeats an uninterrupted one bit for bit on CPU,
and under torchrun the processes split the very batch a single process would draw.

The Trainer's other concerns live beside it: its state and the checkpoint's state dict
(:mod:`.train_state`), what it writes (:mod:`.train_outputs`), the log lines (:mod:`.train_log`),
NaN/Inf detection (:mod:`.divergence`) and SIGINT/SIGTERM (:mod:`.stop_signals`).
"""

from __future__ import annotations

import copy
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from . import distributed as dist
from .atomic import remove_stale_temps
from .checkpoint import load_checkpoint
from .config import Config
from .data import FaceDataset, StepBatchSampler
from .divergence import DivergenceError, divergence, nonfinite_weights
from .gan_step import GANStep, PlainStep, StepInputs
from .gemm_conv import set_gemm_route
from .models import build_models
from .plots import plot_run
from .randomness import (
    GRID_SEED,
    ROLLBACK_SEED_STRIDE,
    STREAM_AUG,
    STREAM_FLIP,
    STREAM_NOISE,
    seeded_rng,
    step_generator,
)
from .rundir import RunDir, RunLock, append_log, new_run_dir, write_status, write_status_safely
from .runtime import choose_fast_path, select_device
from .step_capture import CapturedStep, set_capturable
from .stop_signals import StopSignals, TrainingInterrupted
from .train_log import LogWindow
from .train_outputs import TrainerOutputs
from .train_state import make_optimizer, resumable_checkpoint, update_ema
from .train_state import unwrap as _unwrap

if TYPE_CHECKING:
    from .metrics import TrainingEvaluator

__all__ = ["DivergenceError", "Trainer", "TrainingInterrupted", "update_ema"]


class Trainer(TrainerOutputs):
    """Builds everything a run needs; ``run()`` trains until ``cfg.train.steps``."""

    def __init__(
        self,
        cfg: Config | None = None,
        *,
        resume: str | Path | None = None,
        outdir: str | Path = "runs",
        name: str | None = None,
        device: str = "auto",
        progress: bool = True,
        stop_after: int | None = None,
    ):
        self.rank, self.world, self.local_rank = dist.setup()
        self.is_main = self.rank == 0
        self.progress = progress and self.is_main
        self.stop_after = stop_after

        # ---- Config: from the run being resumed, or the one given ------------------------------
        state: dict[str, Any] | None = None
        ck: Path | None = None  # the checkpoint resumed from
        if resume is not None:
            self.run_dir = Path(resume)
            ck = resumable_checkpoint(self.run_dir)
            if ck is not None:
                state = load_checkpoint(ck)
                cfg = Config.from_dict(state["config"])
            else:
                cfg = Config.load(RunDir(self.run_dir).config)  # killed before its first checkpoint
            if self.is_main:
                print(
                    f"Resuming {self.run_dir} from {ck.name if ck else 'the start (no checkpoint yet)'}",
                    file=sys.stderr,
                )
        assert cfg is not None, "a config or a run to resume is required"
        self.cfg = cfg.validate()
        t = cfg.train
        if t.batch_size % self.world:
            raise ValueError(
                f"train.batch_size {t.batch_size} is not divisible by the number of processes "
                f"({self.world}); the global batch is split evenly"
            )
        self.local_batch = t.batch_size // self.world

        # ---- Device and the fast path for it ---------------------------------------------------
        self.device = select_device(device, self.local_rank)
        self.fast = choose_fast_path(
            self.device,
            t.precision,
            t.channels_last,
            t.threads,
            t.gemm_convs,
            t.cuda_graphs,
            processes=self.world,
            compiled=t.compile,
        )

        # ---- Data ------------------------------------------------------------------------------
        if not cfg.data:
            raise ValueError("no dataset: pass --data DIR (a directory made by `fakefacegen prepare`)")
        self.dataset = FaceDataset(cfg.data)
        if self.dataset.resolution != cfg.model.resolution:
            raise ValueError(
                f"{cfg.data}: images are {self.dataset.resolution} px but model.resolution is "
                f"{cfg.model.resolution}; prepare the data at that size or change the preset"
            )

        # ---- Models, EMA, optimisers -------------------------------------------------------------
        torch.manual_seed(t.seed)  # weight init is the same in every process
        net_g, d = build_models(cfg.model)
        mf = torch.channels_last if self.fast.channels_last else torch.contiguous_format
        for m in (net_g, d):  # in place (Module.to returns the module itself)
            # nn.Module.to takes memory_format= (documented), but torch's stubs have no overload with it.
            cast(Callable[..., nn.Module], m.to)(self.device, memory_format=mf)
        set_gemm_route(net_g, self.fast.gemm_max_pixels)
        set_gemm_route(d, self.fast.gemm_max_pixels)
        # The EMA copy is used by rank 0 alone (grids, metrics, export), so it keeps plain BatchNorm:
        # its BN re-estimation there must not wait for the other processes.
        self.g_ema = copy.deepcopy(net_g).eval().requires_grad_(False) if t.ema > 0 else None
        g: nn.Module = net_g
        if self.world > 1 and t.sync_bn:  # nn.SyncBatchNorm on CUDA; it refuses CPU tensors, hence the helper
            g, d = dist.sync_batchnorm(g, self.device), dist.sync_batchnorm(d, self.device)
        self.opt_g = make_optimizer(g.parameters(), cfg.g_opt)
        self.opt_d = make_optimizer(d.parameters(), cfg.d_opt)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.fast.grad_scaler)
        self.step, self.images_seen, self.elapsed = 0, 0, 0.0
        self.best = {}
        self.rollbacks = 0
        self.log_window = LogWindow()
        if state is not None:
            self._load_state(state, g, d, source=ck)
        if t.compile:
            # torch.compile returns a module for a module; its stubs say only "a callable".
            g, d = cast(nn.Module, torch.compile(g)), cast(nn.Module, torch.compile(d))
        self.g, self.d = dist.wrap(g, self.device), dist.wrap(d, self.device)  # what the step calls
        self.g_net, self.d_net = _unwrap(self.g), _unwrap(self.d)  # the plain modules: weights, state_dicts
        # The step: plain, or from static buffers (captured as a CUDA graph with train.cuda_graphs; step_capture.py).
        graphs = self.fast.cuda_graphs
        autocast = (lambda: self.fast.autocast(cache=False)) if graphs == "on" else self.fast.autocast
        self.gan_step = GANStep(self.g, self.d, self.opt_g, self.opt_d, self.scaler, autocast, t)
        self.plain_step = PlainStep(
            self.gan_step,
            device=self.device,
            channels_last=self.fast.channels_last,
            augment=t.augment,
            rows=(self.rank * self.local_batch, t.batch_size),
            d_net=self.d_net,
            g_net=self.g_net,
        )
        self.run_step: Callable[[StepInputs], torch.Tensor] = (
            self.plain_step if graphs == "off" else CapturedStep(self.plain_step, capture=graphs == "on")
        )
        self._optimiser_state_loaded()

        # ---- Evaluator (before the run directory: a failed start leaves no run folder behind) ----
        self.evaluator: TrainingEvaluator | None = None
        if cfg.eval.every and self.is_main:
            from .metrics import TrainingEvaluator

            self.evaluator = TrainingEvaluator(
                cfg.data,
                n=cfg.eval.n,
                metric=cfg.eval.metric,
                inception=cfg.eval.inception or None,
                device=str(self.device),
                precision=cfg.eval.precision,
                audit=cfg.eval.audit,
            )
        self.grid_z = torch.randn(64, cfg.model.z_dim, generator=seeded_rng(GRID_SEED))

        # ---- Run directory (rank 0 writes; everyone knows where it is) ---------------------------
        self.lock: RunLock | None = None
        created: Path | None = None
        if resume is None:
            if self.is_main:
                created = new_run_dir(outdir, name or cfg.preset or f"{cfg.model.resolution}px")
            self.run_dir = Path(dist.broadcast_object(str(created) if created else None))
        self.files = RunDir(self.run_dir)  # the paths of the files in it
        if self.is_main:
            try:
                self.lock = RunLock(self.run_dir).acquire()
                self.files.checkpoints.mkdir(exist_ok=True)
                self.files.samples.mkdir(exist_ok=True)
                for folder in (self.run_dir, self.files.checkpoints, self.files.samples):
                    remove_stale_temps(folder)  # of the writes of a process that was killed
                if resume is None:
                    cfg.save(self.files.config)  # config first, before anything can fail
                else:  # the log and best.pt as they were at the checkpoint: each step once
                    self._forget_after(self.step, ck)
                write_status(self.run_dir, "running", step=self.step, pid_world=self.world)
            except BaseException:
                if self.lock is not None:
                    self.lock.release()
                if created is not None:  # a failed start leaves no run folder behind
                    shutil.rmtree(created, ignore_errors=True)
                raise
        self.signals = StopSignals(self.is_main)

    def run(self) -> Path:
        """Train to ``cfg.train.steps``; returns the run directory."""
        old = self.signals.install()
        try:
            self._loop()
        except TrainingInterrupted as e:
            if self.is_main:
                write_status(self.run_dir, "interrupted", step=self.step, message=str(e))
            dist.barrier()  # all raise at the same step; torchrun kills the rest once one exits: not before this write
            raise
        except KeyboardInterrupt:  # second Ctrl-C: no checkpoint for this step
            if self.is_main:
                write_status_safely(self.run_dir, "interrupted", step=self.step, message="aborted by a second Ctrl-C")
            raise
        except Exception as e:  # divergence, full disk, ...: never leave "running" or "complete" behind
            if self.is_main:
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                write_status_safely(self.run_dir, "failed", step=self.step, message=msg)
            if isinstance(e, DivergenceError):  # raised by every process at the same step (agreed losses)
                dist.barrier()
            raise
        finally:
            self.signals.restore(old)
            if self.lock:
                self.lock.release()
        return self.run_dir

    def _optimiser_state_loaded(self) -> None:
        """After the optimisers' state was set or replaced (start, resume, roll-back): Adam's capturable flag as
        this run needs it (a checkpoint carries its writer's), and any CUDA graph captured again (it holds the
        old state's addresses)."""
        for opt in (self.opt_g, self.opt_d):
            set_capturable(opt, self.fast.cuda_graphs == "on")
        if isinstance(self.run_step, CapturedStep):
            self.run_step.reset()

    def _step_inputs(self, sampler: StepBatchSampler, step: int) -> StepInputs:
        """What the host draws for ``step``: this process's rows of the global batch, flipped or not, the noise
        and the augmentation's generator; each from its own (seed, step) stream, so drawing ahead changes nothing."""
        t = self.cfg.train
        lo, hi = self.rank * self.local_batch, (self.rank + 1) * self.local_batch  # this process's rows
        batch = self.dataset.__getitems__(sampler.indices(step))
        flip = None
        if t.flip:
            flip = (torch.rand(t.batch_size, generator=step_generator(t.seed, step, STREAM_FLIP)) < 0.5)[lo:hi]
        z = torch.randn(
            t.batch_size,
            self.cfg.model.z_dim,
            generator=step_generator(t.seed + ROLLBACK_SEED_STRIDE * self.rollbacks, step, STREAM_NOISE),
        )[lo:hi]
        aug_rng = step_generator(t.seed, step, STREAM_AUG) if t.augment else None
        return StepInputs(step, self.rollbacks, batch, flip, z, aug_rng)

    def _loop(self) -> None:
        cfg, t = self.cfg, self.cfg.train
        fast = self.fast
        sampler = StepBatchSampler(
            len(self.dataset), self.local_batch, seed=t.seed, rank=self.rank, world_size=self.world
        )
        # On a GPU the host draws the next step's inputs while the device runs this one.
        draw_ahead = self.device.type == "cuda"
        ahead: StepInputs | None = None
        if self.is_main:
            print(
                f"run {self.run_dir} | {fast.describe()} | {self.world} process(es), batch {t.batch_size} "
                f"global / {self.local_batch} per process",
                file=sys.stderr,
            )
            if self.step == 0:
                self._write_grids(real=True)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=t.steps, initial=self.step, unit="step", dynamic_ncols=True, file=sys.stderr)
        window = self.log_window
        steps_this_process = 0
        while self.step < t.steps:
            step = self.step
            t0 = time.perf_counter()
            # ---- Data: this process's rows of the global batch, flips, noise (drawn on the host) ------
            inputs = ahead if ahead is not None and (ahead.step, ahead.rollbacks) == (step, self.rollbacks) else None
            inputs = inputs or self._step_inputs(sampler, step)

            # ---- The GAN step: D phase (with the lazy R1/R2 when due), then G phase ---------------
            # (the batch converted to [-1, 1] and augmented on the device; plain or a CUDA graph replay)
            stats_t = self.run_step(inputs)
            if draw_ahead:
                ahead = self._step_inputs(sampler, step + 1)

            # ---- Divergence check: at once, before anything is saved -------------------------------
            # Under torchrun the losses and the stop flag are agreed on by all processes, so they
            # all take the same branch (log, stop, roll back) at the same step.
            # d_real/d_fake/r1 too, so the log describes the global batch, not rank 0's share of it.
            # One device->host transfer per step (on a GPU each .item() is a sync): the six statistics
            # and a flag that is 0 when every weight of D and G is finite (gan_step.step_stats).
            stats = stats_t.tolist()
            maybe_bad_w = stats.pop()
            *agreed, stop_flag = dist.agree([*stats, self.signals.flag()])
            stop_signum = self.signals.agreed(stop_flag)
            ld, lg = agreed[:2]
            bad_w = nonfinite_weights(self.d_net, self.g_net) if maybe_bad_w else None
            what = divergence(step, ld, lg, bad_w)
            if what is not None:
                self._diverged(what)
                self._optimiser_state_loaded()  # a roll-back replaced it
                continue
            if self.g_ema is not None:
                update_ema(self.g_ema, self.g_net, t.ema if step >= t.ema_start else 0.0)

            self.step += 1
            dist.debug_dump(self, self.step)  # only with FAKEFACEGEN_DEBUG_DUMP_DIR set
            self.images_seen += t.batch_size
            steps_this_process += 1
            self.elapsed += time.perf_counter() - t0
            window.add(agreed, t.batch_size)

            # ---- Bookkeeping: log, grids, metrics, checkpoints (rank 0 writes) -------------------
            last = self.step == t.steps
            if self.step % t.log_every == 0 or last:
                rec = window.record(self.step, self.images_seen, self.elapsed, t)
                if self.is_main:
                    append_log(self.files.log, rec)
                    if bar:
                        bar.set_postfix(
                            D=f"{rec['loss_d']:.3f}",
                            G=f"{rec['loss_g']:.3f}",
                            Dx=f"{rec['d_real']:.2f}",
                            DGz=f"{rec['d_fake']:.2f}",
                            ips=f"{rec['img_per_s']:.0f}",
                        )
            if self.is_main and (self.step % t.sample_every == 0 or last):
                self._write_grids()
                plot_run(self.run_dir)
            if self.evaluator is not None and (self.step % cfg.eval.every == 0 or last):
                self._evaluate(self.evaluator)
            # The agreed flag, not self.signals.signum: a signal landing after this step's agree() is
            # seen by this process alone and must wait for the next step's, or the processes part ways.
            stop = bool(stop_flag) or (self.stop_after is not None and steps_this_process >= self.stop_after)
            if self.step % t.ckpt_every == 0 or last or stop:
                self._checkpoint(final=last)
            if bar:
                bar.update(1)
            if stop and not last:
                if bar:
                    bar.close()
                if stop_signum is not None:
                    raise TrainingInterrupted(
                        stop_signum, f"stopped at step {self.step} by {signal.Signals(stop_signum).name}"
                    )
                return
        if bar:
            bar.close()
        if self.is_main:
            if self._exported_step() != self.step:  # killed between the last checkpoint and the export
                self._export_generator()
            plot_run(self.run_dir)
            write_status(
                self.run_dir, "complete", step=self.step, images_seen=self.images_seen, elapsed_s=round(self.elapsed, 1)
            )
