"""What a training run carries from step to step and across a resume: the networks' and optimisers'
state, the counters, the EMA copy of G; the checkpoint's state dict, loading it back, finding the
checkpoint to resume from, and sampling from the run's current generator."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from .config import Config, OptimConfig
from .generator_network import GeneratorNetwork
from .models import recalibrate_batchnorm
from .rundir import RunDir
from .train_log import LogWindow


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for parameters; buffers are left alone
    (BatchNorm statistics of the EMA copy are re-estimated before it is used)."""
    # One multi-tensor lerp: on CUDA a handful of kernels instead of one per parameter.
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)


def make_optimizer(params: Iterable[nn.Parameter], oc: OptimConfig) -> torch.optim.Optimizer:
    if oc.name == "adam":
        # foreach=True: the multi-tensor update, bitwise equal to the for-loop one and 1.3x faster on
        # CPU (benchmarks/bench_train.py, "Adam.step() alone"); PyTorch picks it on CUDA by itself.
        return torch.optim.Adam(
            params, lr=oc.lr, betas=(oc.beta1, oc.beta2), weight_decay=oc.weight_decay, foreach=True
        )
    return torch.optim.SGD(params, lr=oc.lr, momentum=oc.momentum, weight_decay=oc.weight_decay)


def unwrap(m: nn.Module) -> nn.Module:
    """The plain module inside a DDP and/or torch.compile wrapper."""
    m = getattr(m, "module", m)  # DDP
    return getattr(m, "_orig_mod", m)  # torch.compile


def resumable_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint of ``run_dir`` that loads, or None if it has none yet (killed before the first)."""
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


class TrainerState:
    """The Trainer's state as a checkpoint holds it (the Trainer sets these attributes up)."""

    cfg: Config
    device: torch.device
    world: int
    step: int
    images_seen: int
    elapsed: float
    best: dict[str, Any]
    rollbacks: int
    log_window: LogWindow  # the steps since the last 'train' log line
    g_net: nn.Module  # G and D without their DDP/compile wrappers: the weights, the state_dicts
    d_net: nn.Module
    g_ema: GeneratorNetwork | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler: torch.amp.GradScaler

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
        self.log_window.load_state_dict(state.get("log_window"))

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
            "log_window": self.log_window.state_dict(),
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
