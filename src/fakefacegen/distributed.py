"""torch.distributed glue for runs started by ``torchrun`` (DDP; nccl on CUDA, gloo on CPU).

The global batch (``train.batch_size``) is what a run trains on whatever the number of processes:
process ``r`` of ``W`` takes rows ``r*B/W:(r+1)*B/W`` of the very batch a single process would draw
(data.StepBatchSampler), and DDP averages the gradients, so the update is the single-process one.

BatchNorm is per process by default, as in most GAN codebases: each process normalises its own
slice of the batch, and D's real and fake passes stay separate forward calls, so statistics never
mix real with fake, nor one process with another. ``train.sync_bn`` switches to statistics over the
global batch (still per pass): nn.SyncBatchNorm on CUDA, :class:`GlobalBatchNorm2d` elsewhere
(nn.SyncBatchNorm refuses CPU tensors). With it a W-process run computes what one process computes,
up to the order of floating-point sums; see docs/distributed.md for the measured difference.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as td
from torch import nn

DUMP_ENV = "FAKEFACEGEN_DEBUG_DUMP_DIR"
"""When set, :func:`debug_dump` saves every process's weights after every step into this folder."""


def setup() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initialises the process group when torchrun set WORLD_SIZE > 1.

    Backend: nccl where CUDA is available, else gloo; ``FAKEFACEGEN_BACKEND=gloo`` forces gloo.
    ``FAKEFACEGEN_DIST_TIMEOUT`` (seconds, default 3600) bounds how long a process waits in a
    collective, e.g. for rank 0 to finish a metric evaluation.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world <= 1:
        return 0, 1, local_rank
    if not td.is_initialized():
        backend = os.environ.get("FAKEFACEGEN_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend not in ("nccl", "gloo"):
            raise ValueError(f"FAKEFACEGEN_BACKEND must be nccl or gloo, got {backend!r}")
        if backend == "nccl":
            if not torch.cuda.is_available():
                raise ValueError("FAKEFACEGEN_BACKEND=nccl needs CUDA, which this machine does not have")
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            n_gpu = torch.cuda.device_count()
            if local_world > n_gpu:
                # NCCL refuses two processes on one GPU; say so before it fails with an opaque error.
                raise ValueError(
                    f"torchrun --nproc_per_node={local_world} but this machine has {n_gpu} GPU(s): "
                    f"use at most one process per GPU (or FAKEFACEGEN_BACKEND=gloo)"
                )
            torch.cuda.set_device(local_rank)
        timeout = timedelta(seconds=float(os.environ.get("FAKEFACEGEN_DIST_TIMEOUT", "3600")))
        td.init_process_group(backend=backend, timeout=timeout)
    return td.get_rank(), td.get_world_size(), local_rank


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return td.is_available() and td.is_initialized() and td.get_world_size() > 1


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when distributed, else unchanged.

    broadcast_buffers is off: BatchNorm running statistics never enter a training step (G and D
    train on batch statistics), only samples and checkpoints, which rank 0 makes from its own
    buffers and every process then loads. Broadcasting them before each of D's three forward
    calls per step would cost a collective each and change nothing that is trained.
    """
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    # torch >= 2.13 renames broadcast_buffers to forward_sync_buffers (buffers still synced once at
    # construction, which is harmless: every process starts from the same weights and buffers).
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters:
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def no_sync(model: nn.Module):
    """Skip the gradient all-reduce of a DDP model for the enclosed backward passes."""
    return model.no_sync() if isinstance(model, nn.parallel.DistributedDataParallel) else contextlib.nullcontext()


def agree(values: list[float]) -> list[float]:
    """Mean over processes of each value but the last, which is a flag (1.0 if any process set it).

    One small all-reduce per step; every process gets the same numbers, so all take the same branch.
    """
    if not is_distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if td.get_backend() == "nccl":
        t = t.cuda()
    td.all_reduce(t)
    out = (t / td.get_world_size()).tolist()
    out[-1] = 1.0 if out[-1] > 0 else 0.0
    return out


def launched_by_torchrun() -> bool:
    """True in a process started by torchrun, whose agent passes a terminal's Ctrl-C on to workers
    that got it from the terminal already (so each worker sees it twice within a moment)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if is_distributed():
        td.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from process ``src`` in every process (a picklable object)."""
    if not is_distributed():
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=src)
    return box[0]


def cleanup() -> None:
    """Destroy the process group, if one was initialised."""
    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


# ------------------------------------------------------------------------------------------------
# BatchNorm over the global batch


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the whole global batch (all processes).

    For devices nn.SyncBatchNorm does not support (CPU with gloo). Mean and variance come from two
    differentiable all-reduces (sums, then centred squares), so gradients flow across processes as
    in nn.SyncBatchNorm; running statistics use the global count. Same state_dict as BatchNorm2d.
    In eval mode, outside a process group, or under ``torch.no_grad()`` (e.g. BN re-estimation that
    rank 0 runs alone) it is plain BatchNorm2d and talks to no one, so no process waits forever.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled() and is_distributed()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce  # differentiable collectives

        self._check_input_dim(x)
        c = x.shape[1]
        shape = (1, c, 1, 1)
        sums = torch.cat([x.sum(dim=(0, 2, 3)), x.new_full((1,), x.numel() // c)])
        sums = all_reduce(sums)
        count = sums[c].detach()
        mean = sums[:c] / count
        centred = x - mean.view(shape)
        var = all_reduce(centred.pow(2).sum(dim=(0, 2, 3))) / count  # biased, as BatchNorm normalises
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        tracked, running_mean, running_var = self.num_batches_tracked, self.running_mean, self.running_var
        # The buffers are None exactly when the module was built without track_running_stats.
        if self.track_running_stats and tracked is not None and running_mean is not None and running_var is not None:
            with torch.no_grad():
                tracked.add_(1)
                f = (1.0 / float(tracked)) if self.momentum is None else self.momentum
                n = float(count)
                running_mean.lerp_(mean.detach().to(running_mean.dtype), f)
                unbiased = var.detach() * (n / max(n - 1.0, 1.0))
                running_var.lerp_(unbiased.to(running_var.dtype), f)
        return y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with every BatchNorm2d computing statistics over the global batch.

    nn.SyncBatchNorm on CUDA (fused kernels); :class:`GlobalBatchNorm2d` elsewhere. Weights and
    buffers are kept, and the state_dict keys do not change, so checkpoints stay interchangeable.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_global_bn(model)


def _convert_global_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
        new = GlobalBatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new.to(next(iter(module.state_dict().values())).device)
    for name, child in module.named_children():
        module.add_module(name, _convert_global_bn(child))
    return module


# ------------------------------------------------------------------------------------------------
# Debugging: every process's weights after every step


def debug_dump(trainer: Any, step: int) -> Path | None:
    """If FAKEFACEGEN_DEBUG_DUMP_DIR is set, save this process's G, D (and EMA) state after ``step``.

    Writes ``<dir>/rank<R>-step<NNNNNN>.pt`` (weights and buffers, on CPU) so a test can check that
    all processes hold the same weights after every step and compare them with a single-process
    run. Called by the trainer once per step; costs one environment lookup when the variable is unset.
    """
    out = os.environ.get(DUMP_ENV)
    if not out:
        return None
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)

    def state(m: nn.Module | None) -> dict[str, torch.Tensor] | None:
        if m is None:
            return None
        m = getattr(m, "module", m)  # DDP
        m = getattr(m, "_orig_mod", m)  # torch.compile
        return {k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()}

    rank = int(getattr(trainer, "rank", 0))
    path = folder / f"rank{rank}-step{step:06d}.pt"
    torch.save(
        {
            "step": step,
            "rank": rank,
            "world": int(getattr(trainer, "world", 1)),
            "G": state(trainer.g),
            "D": state(trainer.d),
            "G_ema": state(getattr(trainer, "g_ema", None)),
        },
        path,
    )
    return path
