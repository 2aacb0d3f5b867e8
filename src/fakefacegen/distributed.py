"""torch.distributed glue for runs started by ``torchrun`` (DDP; gloo on CPU, nccl on CUDA).

BatchNorm is per process by default, as in most GAN codebases: each process normalises its own
slice of the batch, and D's real and fake passes stay separate forward calls, so statistics never
mix real with fake. ``train.sync_bn`` switches to SyncBatchNorm (statistics over the global batch).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
import torch.distributed as td
from torch import nn


def setup() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initialises the process group when torchrun set WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not td.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("FAKEFACEGEN_BACKEND") != "gloo" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        td.init_process_group(backend=backend)
    return td.get_rank(), td.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    return td.is_available() and td.is_initialized() and td.get_world_size() > 1


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=True)


def no_sync(model: nn.Module):
    """Skip the gradient all-reduce of a DDP model for the enclosed backward passes."""
    return model.no_sync() if isinstance(model, nn.parallel.DistributedDataParallel) else contextlib.nullcontext()


def agree(values: list[float]) -> list[float]:
    """Mean of each value over processes for losses, max for flags: one small all-reduce per step."""
    if not is_distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if td.get_backend() == "nccl":
        t = t.cuda()
    td.all_reduce(t)
    out = (t / td.get_world_size()).tolist()
    out[-1] = 1.0 if out[-1] > 0 else 0.0
    return out


def barrier() -> None:
    if is_distributed():
        td.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not is_distributed():
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=src)
    return box[0]


def cleanup() -> None:
    if td.is_available() and td.is_initialized():
        td.destroy_process_group()
