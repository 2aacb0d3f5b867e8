"""Training: set-up (``Trainer.__init__``) kept apart from one readable loop (``Trainer.run``).

Every step is one discriminator update and one generator update on a global batch. Everything
random in a step (data order, flips, noise, augmentation) is drawn from generators seeded by
(seed, step), so a run resumed from a checkpoint repeats an uninterrupted one bit for bit on CPU,
and under torchrun the processes split the very batch a single process would draw.
"""

from __future__ import annotations

import copy
import json
import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from . import distributed as dist
from .augment import diff_augment
from .checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_generator_file,
    prune_checkpoints,
    save_checkpoint,
    save_generator,
)
from .config import Config
from .data import FaceDataset, StepBatchSampler, to_model_input
from .gan_step import GANStep
from .gemm_conv import set_gemm_route
from .images import save_grid, to_uint8
from .models import build_models, recalibrate_batchnorm
from .plots import plot_run
from .randomness import (
    EVAL_SEED,
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

if TYPE_CHECKING:
    from .metrics import TrainingEvaluator


class DivergenceError(RuntimeError):
    """A loss or weight became NaN/Inf."""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was written."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for parameters; buffers are left alone
    (BatchNorm statistics of the EMA copy are re-estimated before it is used)."""
    # One multi-tensor lerp: on CUDA a handful of kernels instead of one per parameter.
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)


def _make_optimizer(params, oc) -> torch.optim.Optimizer:
    if oc.name == "adam":
        # foreach=True: the multi-tensor update, bitwise equal to the for-loop one and 1.3x faster on
        # CPU (benchmarks/bench_train.py, "Adam.step() alone"); PyTorch picks it on CUDA by itself.
        return torch.optim.Adam(
            params, lr=oc.lr, betas=(oc.beta1, oc.beta2), weight_decay=oc.weight_decay, foreach=True
        )
    return torch.optim.SGD(params, lr=oc.lr, momentum=oc.momentum, weight_decay=oc.weight_decay)


def _unwrap(m: nn.Module) -> nn.Module:
    """The plain module inside a DDP and/or torch.compile wrapper."""
    m = getattr(m, "module", m)  # DDP
    return getattr(m, "_orig_mod", m)  # torch.compile


def _nonfinite_param(m: nn.Module) -> str | None:
    for name, p in m.named_parameters():
        if not torch.isfinite(p).all():
            return name
    return None


class Trainer:
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
        if resume is not None:
            self.run_dir = Path(resume)
            ck = self._resumable_checkpoint(self.run_dir)
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
        self.fast = choose_fast_path(self.device, t.precision, t.channels_last, t.threads, t.gemm_convs)

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
        self.opt_g = _make_optimizer(g.parameters(), cfg.g_opt)
        self.opt_d = _make_optimizer(d.parameters(), cfg.d_opt)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.fast.grad_scaler)
        self.step, self.images_seen, self.elapsed = 0, 0, 0.0
        self.best: dict[str, Any] = {}
        self.rollbacks = 0
        if state is not None:
            self._load_state(state, g, d, source=ck)
        if t.compile:
            # torch.compile returns a module for a module; its stubs say only "a callable".
            g, d = cast(nn.Module, torch.compile(g)), cast(nn.Module, torch.compile(d))
        self.g, self.d = dist.wrap(g, self.device), dist.wrap(d, self.device)  # what the step calls
        self.g_net, self.d_net = _unwrap(self.g), _unwrap(self.d)  # the plain modules: weights, state_dicts
        self.gan_step = GANStep(self.g, self.d, self.opt_g, self.opt_d, self.scaler, self.fast.autocast, t)

        # ---- Run directory (rank 0 writes; everyone knows where it is) ---------------------------
        self.lock: RunLock | None = None
        if resume is None:
            run = None
            if self.is_main:
                run = new_run_dir(outdir, name or cfg.preset or f"{cfg.model.resolution}px")
            self.run_dir = Path(dist.broadcast_object(str(run) if run else None))
        self.files = RunDir(self.run_dir)  # the paths of the files in it
        if self.is_main:
            self.lock = RunLock(self.run_dir).acquire()
            self.files.checkpoints.mkdir(exist_ok=True)
            self.files.samples.mkdir(exist_ok=True)
            if resume is None:
                cfg.save(self.files.config)  # config first, before anything can fail
            write_status(self.run_dir, "running", step=self.step, pid_world=self.world)

        self.grid_z = torch.randn(64, cfg.model.z_dim, generator=seeded_rng(GRID_SEED))
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
            )
        self._stop_signal: int | None = None
        self._stop_time = 0.0

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _resumable_checkpoint(run_dir: Path) -> Path | None:
        if not RunDir(run_dir).is_run():
            raise CheckpointError(f"{run_dir}: not a run directory (no config.json)")
        # Newest first; an unreadable one (should not happen: writes are atomic) is reported and skipped.
        ckpts = list_checkpoints(run_dir)
        errors = []
        for ck in reversed(ckpts):
            try:
                load_checkpoint(ck)
                return ck
            except CheckpointError as e:
                errors.append(e)
                print(f"warning: skipping {e}", file=sys.stderr)
        if ckpts:  # starting over would silently throw the run away
            raise CheckpointError(
                f"{run_dir}: none of its {len(ckpts)} checkpoint(s) can be used; refusing to "
                f"start over (newest: {errors[0]})"
            )
        return None

    def _load_state(self, state: dict[str, Any], g: nn.Module, d: nn.Module, source: Any = "checkpoint") -> None:
        try:
            g.load_state_dict(state["G"])
            d.load_state_dict(state["D"])
            if self.g_ema is not None:
                self.g_ema.load_state_dict(state.get("G_ema") or state["G"])
            self.opt_g.load_state_dict(state["opt_G"])
            self.opt_d.load_state_dict(state["opt_D"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(
                f"{source}: checkpoint does not fit this model ({str(e).splitlines()[0][:200]})"
            ) from None
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.images_seen = int(state["step"]), int(state["images_seen"])
        self.elapsed = float(state.get("elapsed_s", 0.0))
        self.best = dict(state.get("best") or {})
        self.rollbacks = int(state.get("rollbacks", 0))

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "step": self.step,
            "images_seen": self.images_seen,
            "elapsed_s": self.elapsed,
            "best": self.best,
            "rollbacks": self.rollbacks,
            "G": self.g_net.state_dict(),
            "D": self.d_net.state_dict(),
            "G_ema": self.g_ema.state_dict() if self.g_ema is not None else None,
            "opt_G": self.opt_g.state_dict(),
            "opt_D": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "world_size": self.world,
        }

    def sampling_generator(self) -> nn.Module:
        """The network used for samples and metrics: the EMA copy (BN re-estimated) or G in eval mode."""
        if self.g_ema is not None:
            recalibrate_batchnorm(self.g_ema, batch_size=min(128, self.cfg.train.batch_size * 2))
            return self.g_ema
        return self.g_net

    @torch.no_grad()
    def sample(self, z: torch.Tensor) -> torch.Tensor:
        g = self.sampling_generator()
        was = g.training
        g.eval()
        out = torch.cat([g(zb.to(self.device)).float().cpu() for zb in z.split(256)])
        g.train(was)
        return out

    # ------------------------------------------------------------------------------------------
    def _handle_signal(self, signum, frame) -> None:  # noqa: ARG002
        now = time.monotonic()
        if self._stop_signal is not None:  # second Ctrl-C: stop now
            # ...unless it is torchrun passing on the Ctrl-C this process got from the terminal too.
            if dist.launched_by_torchrun() and now - self._stop_time < 3.0:
                return
            raise KeyboardInterrupt
        self._stop_signal, self._stop_time = signum, now
        if self.is_main:
            print(
                f"\n{signal.Signals(signum).name} received: finishing this step and writing a checkpoint "
                f"(press Ctrl-C again to abort without one)",
                file=sys.stderr,
            )

    def run(self) -> Path:
        """Train to ``cfg.train.steps``; returns the run directory."""
        old = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT, signal.SIGTERM)}
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
            for s, h in old.items():
                signal.signal(s, h)
            if self.lock:
                self.lock.release()
        return self.run_dir

    def _loop(self) -> None:
        cfg, t = self.cfg, self.cfg.train
        dev, fast = self.device, self.fast
        sampler = StepBatchSampler(
            len(self.dataset), self.local_batch, seed=t.seed, rank=self.rank, world_size=self.world
        )
        lo, hi = self.rank * self.local_batch, (self.rank + 1) * self.local_batch  # this process's rows
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
        acc = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0, "r1": 0.0, "r2": 0.0, "n": 0}
        tick, tick_images = time.perf_counter(), 0
        steps_this_process = 0
        while self.step < t.steps:
            step = self.step
            t0 = time.perf_counter()
            # ---- Data: this process's rows of the global batch, flipped, in [-1, 1] -------------
            batch = self.dataset.__getitems__(sampler.indices(step))
            flip = None
            if t.flip:
                flip = (torch.rand(t.batch_size, generator=step_generator(t.seed, step, STREAM_FLIP)) < 0.5)[lo:hi]
            real = to_model_input(batch, device=dev, channels_last=fast.channels_last, flip=flip)
            z = torch.randn(
                t.batch_size,
                cfg.model.z_dim,
                generator=step_generator(t.seed + ROLLBACK_SEED_STRIDE * self.rollbacks, step, STREAM_NOISE),
            )[lo:hi]
            z = z.to(dev)
            aug_rng = step_generator(t.seed, step, STREAM_AUG) if t.augment else None

            def aug(x: torch.Tensor) -> torch.Tensor:
                # Draws for the global batch, sliced to this process's rows (as flips and noise).
                return diff_augment(x, t.augment, aug_rng, rows=(lo, t.batch_size)) if t.augment else x

            # ---- The GAN step: D phase (with the lazy R1/R2 when due), then G phase ---------------
            out = self.gan_step(step, real, z, aug)

            # ---- Divergence check: at once, before anything is saved -------------------------------
            # Under torchrun the losses and the stop flag are agreed on by all processes, so they
            # all take the same branch (log, stop, roll back) at the same step.
            # d_real/d_fake/r1 too, so the log describes the global batch, not rank 0's share of it.
            # One device->host transfer per step (on a GPU each .item() is a sync): the five statistics
            # and a flag that is 0 when every weight of D and G is finite.
            stats = torch.stack(
                [
                    out.loss_d.detach().float(),
                    out.loss_g.detach().float(),
                    torch.sigmoid(out.logits_real.detach().float()).mean(),
                    torch.sigmoid(out.logits_fake.detach().float()).mean(),
                    out.r1.detach().float().reshape(()),
                    out.r2.detach().float().reshape(()),
                    self._weights_maybe_nonfinite(),
                ]
            ).tolist()
            maybe_bad_w = stats.pop()
            ld, lg, dx, dgz, r1v, r2v, stop_flag = dist.agree([*stats, float(self._stop_signal is not None)])
            if stop_flag and self._stop_signal is None:
                self._stop_signal = signal.SIGTERM
            stop_signum = self._stop_signal if stop_flag else None
            bad_w = self._nonfinite_weights() if maybe_bad_w else None
            if bad_w or not (math.isfinite(ld) and math.isfinite(lg)):
                if bad_w:
                    what = f"step {step + 1}: {bad_w} (loss_d {ld}, loss_g {lg})"
                else:
                    bad = "discriminator (loss_d)" if not math.isfinite(ld) else "generator (loss_g)"
                    what = f"step {step + 1}: the {bad} loss is {ld if bad[0] == 'd' else lg}"
                self._diverged(what)
                continue
            if self.g_ema is not None:
                update_ema(self.g_ema, self.g_net, t.ema if step >= t.ema_start else 0.0)

            self.step += 1
            dist.debug_dump(self, self.step)  # only with FAKEFACEGEN_DEBUG_DUMP_DIR set
            self.images_seen += t.batch_size
            steps_this_process += 1
            self.elapsed += time.perf_counter() - t0
            acc["loss_d"] += ld
            acc["loss_g"] += lg
            acc["d_real"] += dx
            acc["d_fake"] += dgz
            acc["r1"] += r1v
            acc["r2"] += r2v
            acc["n"] += 1
            tick_images += t.batch_size

            # ---- Bookkeeping: log, grids, metrics, checkpoints (rank 0 writes) -------------------
            last = self.step == t.steps
            if self.step % t.log_every == 0 or last:
                now = time.perf_counter()
                rec = {
                    "kind": "train",
                    "step": self.step,
                    "images_seen": self.images_seen,
                    **{k: acc[k] / acc["n"] for k in ("loss_d", "loss_g", "d_real", "d_fake")},
                    "img_per_s": tick_images / max(now - tick, 1e-9),
                    "elapsed_s": round(self.elapsed, 2),
                }
                for reg in ("r1", "r2"):
                    if getattr(t, f"{reg}_gamma"):
                        rec[reg] = acc[reg] / acc["n"]
                acc = dict.fromkeys(acc, 0.0)
                acc["n"] = 0
                tick, tick_images = now, 0
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
            # The agreed flag, not self._stop_signal: a signal landing after this step's agree() is
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

    # ------------------------------------------------------------------------------------------
    def _weights_maybe_nonfinite(self) -> torch.Tensor:
        """0-d float tensor on the device: 1 if some weight of D or G may be NaN/Inf, else 0.

        One multi-tensor norm per network, no sync; a NaN/Inf weight makes its tensor's norm NaN/Inf
        (a finite tensor whose norm overflows fp32 is a false alarm that _nonfinite_weights clears)."""
        norms = [n for m in (self.d_net, self.g_net) for n in torch._foreach_norm(list(m.parameters()))]
        return (~torch.isfinite(torch.stack(norms))).any().float()

    def _nonfinite_weights(self) -> str | None:
        """'the discriminator weight X is NaN/Inf' (D first: it is updated first in a step), or None.

        Called only when _weights_maybe_nonfinite raised the flag, to name the weight."""
        found = [
            f"{label} weight {name}"
            for label, m in (("discriminator", self.d_net), ("generator", self.g_net))
            if (name := _nonfinite_param(m))
        ]
        if not found:
            return None
        return f"the {found[0]} is NaN/Inf" + (f" (and the {found[1]})" if len(found) > 1 else "")

    def _diverged(self, what: str) -> None:
        ck = latest_checkpoint(self.run_dir)
        if self.cfg.train.on_nan == "rollback" and ck is not None and self.rollbacks < 3:
            self.rollbacks += 1
            if self.is_main:
                print(
                    f"warning: {what}; rolling back to {ck.name} with fresh noise (rollback {self.rollbacks} of 3)",
                    file=sys.stderr,
                )
            state = load_checkpoint(ck, map_location=self.device)
            rollbacks = self.rollbacks
            self._load_state(state, self.g_net, self.d_net, source=ck)
            self.rollbacks = rollbacks
            return
        raise DivergenceError(
            f"training diverged: {what}; no checkpoint was overwritten"
            + ("" if ck is None else f"; the last good one is {ck}")
        )

    def _checkpoint(self, final: bool) -> None:
        if not self.is_main:
            dist.barrier()
            return
        bad = _nonfinite_param(self.g_net) or _nonfinite_param(self.d_net)
        if bad:
            raise DivergenceError(
                f"training diverged: weight {bad} is NaN/Inf at step {self.step}; no checkpoint was written"
            )
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
