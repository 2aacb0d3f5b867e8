import numpy as np
import pytest
import torch

from fakefacegen.data import FaceDataset, StepBatchSampler, make_loader, to_model_input
from fakefacegen.prepare import DatasetFormatError


@pytest.mark.slow
def test_dataset_values_and_shapes(dataset32):
    ds = FaceDataset(dataset32)
    raw = np.load(dataset32 / "images.npy")
    assert len(ds) == 64 and ds.resolution == 32
    assert torch.equal(ds[5], torch.from_numpy(raw[5]).permute(2, 0, 1))
    batch = ds.__getitems__([7, 3, 7])
    assert batch.shape == (3, 32, 32, 3) and torch.equal(batch[0], torch.from_numpy(raw[7]))
    x = to_model_input(batch, device=torch.device("cpu"), channels_last=True)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x[1], torch.from_numpy(raw[3]).permute(2, 0, 1).float() / 127.5 - 1)


def test_flip_mirrors_only_selected_rows(dataset32):
    ds = FaceDataset(dataset32)
    b = ds.__getitems__([0, 1])
    x = to_model_input(b, device=torch.device("cpu"), channels_last=False, flip=torch.tensor([True, False]))
    ref = to_model_input(b, device=torch.device("cpu"), channels_last=False)
    assert torch.equal(x[0], ref[0].flip(-1)) and torch.equal(x[1], ref[1])


def test_sampler_epochs_are_permutations_and_resumable():
    s = StepBatchSampler(100, 10, seed=3)
    assert s.steps_per_epoch == 10
    epoch0 = sum((s.indices(k) for k in range(10)), [])
    assert sorted(epoch0) == list(range(100))
    epoch1 = sum((s.indices(k) for k in range(10, 20)), [])
    assert sorted(epoch1) == list(range(100)) and epoch1 != epoch0  # reshuffled per epoch
    it = iter(StepBatchSampler(100, 10, seed=3, start_step=13))
    assert next(it) == s.indices(13)


def test_sampler_shards_partition_the_global_batch():
    one = StepBatchSampler(100, 8, seed=1)
    r0 = StepBatchSampler(100, 4, seed=1, rank=0, world_size=2)
    r1 = StepBatchSampler(100, 4, seed=1, rank=1, world_size=2)
    for step in (0, 5, 17):
        assert r0.indices(step) + r1.indices(step) == one.indices(step)


def test_loader_yields_batches_of_the_requested_size(dataset32):
    loader = make_loader(FaceDataset(dataset32), 16, seed=0)
    it = iter(loader)
    for _ in range(6):  # more than one epoch (4 steps)
        b = next(it)
        assert b.shape == (16, 32, 32, 3) and b.dtype == torch.uint8


def test_missing_or_broken_dataset_names_the_file(tmp_path, dataset32):
    with pytest.raises(DatasetFormatError, match=str(tmp_path / "nope")):
        FaceDataset(tmp_path / "nope")
    (dataset32 / "images.npy").write_bytes(b"garbage")
    with pytest.raises(DatasetFormatError, match="images.npy"):
        FaceDataset(dataset32)
