"""The prepared dataset as a PyTorch Dataset, and a deterministic, resumable, shardable batch order.

Nothing is decoded while training: ``images.npy`` (uint8, N x S x S x 3) is memory-mapped and a
batch is one fancy-indexing copy. The order of batches is a pure function of (seed, step), so a
run resumed at step k sees exactly the batches an uninterrupted run would, and under torchrun each
process takes its own slice of the same global batch (the union over processes is the batch a
single process would see with the same global batch size).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .dataset_format import IMAGES_FILE, DatasetFormatError, open_dataset
from .randomness import STREAM_EPOCH, step_generator


class FaceDataset(Dataset):
    """Images of a prepared dataset directory as uint8 tensors (3, S, S); batches come as (B, S, S, 3)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest, self.images = open_dataset(self.root)  # validated: uint8 (count, size, size, 3)
        if len(self.images) == 0:
            raise DatasetFormatError(f"{self.root / IMAGES_FILE}: the dataset holds no images")

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.images[i])).permute(2, 0, 1)

    def __getitems__(self, indices: list[int] | np.ndarray) -> torch.Tensor:
        """A whole batch in one copy: uint8 (B, S, S, 3). Sorted reads are kinder to the page cache."""
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        batch = np.empty((len(idx),) + self.images.shape[1:], dtype=np.uint8)
        batch[order] = self.images[idx[order]]
        return torch.from_numpy(batch)


class StepBatchSampler(Sampler[list[int]]):
    """Yields this process's indices for steps ``start_step, start_step+1, ...`` (forever).

    Each epoch is a fresh permutation from (seed, epoch); the last incomplete global batch of an
    epoch is dropped. Process ``rank`` of ``world_size`` takes rows ``rank*B:(rank+1)*B`` of every
    global batch of ``B*world_size`` images.
    """

    def __init__(
        self, n: int, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1, start_step: int = 0
    ):
        global_batch = batch_size * world_size
        if n < global_batch:
            raise ValueError(f"the dataset has {n} images, fewer than one global batch of {global_batch}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.steps_per_epoch = n // global_batch

    def indices(self, step: int) -> list[int]:
        epoch, pos = divmod(step, self.steps_per_epoch)
        perm = torch.randperm(self.n, generator=step_generator(self.seed, epoch, STREAM_EPOCH))
        start = (pos * self.world_size + self.rank) * self.batch_size
        return perm[start : start + self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            yield self.indices(step)
            step += 1

    def __len__(self) -> int:  # an endless sampler; len() reports one epoch
        return self.steps_per_epoch


def make_loader(
    dataset: FaceDataset,
    batch_size: int,
    *,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    start_step: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """An endless DataLoader of uint8 (B, S, S, 3) batches in the deterministic step order."""
    sampler = StepBatchSampler(
        len(dataset), batch_size, seed=seed, rank=rank, world_size=world_size, start_step=start_step
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        # torch types collate_fn as taking a list of samples; with a dataset that has __getitems__ it
        # receives what __getitems__ returns, here the batch tensor.
        collate_fn=cast(Callable[[list[Any]], Any], _identity),
        num_workers=num_workers,
        pin_memory=False,
        persistent_workers=num_workers > 0,
    )


def _identity(batch: torch.Tensor) -> torch.Tensor:
    return batch


def to_model_input(
    batch: torch.Tensor, *, device: torch.device, channels_last: bool, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> float (B, 3, S, S) in [-1, 1] on ``device``; rows where ``flip`` is True mirrored.

    The NHWC uint8 batch is already channels_last in memory, so permuting costs no copy there.
    """
    x = batch.to(device, non_blocking=True)
    if flip is not None and bool(flip.any()):
        flip = flip.to(device)
        x = torch.where(flip[:, None, None, None], x.flip(2), x)
    x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
