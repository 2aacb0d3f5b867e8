"""Step randomness: every random draw of training and sampling comes from a CPU generator seeded by
a pure function of integers (the run's seed, the step or row, and a stream number), so resuming
needs no RNG state and a resumed run repeats an uninterrupted one bit for bit.

This module holds the seed mixer and every stream number and fixed seed. The values are part of
the results (resume bit-exactness, the figures in docs/): never change one.
"""

from __future__ import annotations

import torch

# Stream numbers: one per purpose, so draws for different purposes at the same step are independent.
STREAM_EPOCH = 1  # data order: a permutation per (seed, epoch) (data.StepBatchSampler)
STREAM_NOISE = 11  # the generator's input z at a training step
STREAM_FLIP = 12  # horizontal flips of the real batch
STREAM_AUG = 13  # DiffAugment's draws
STREAM_SAMPLE = 31  # row i of generate.noise(n, z_dim, seed)

ROLLBACK_SEED_STRIDE = 7919  # after a divergence rollback the noise seed is seed + 7919 * rollbacks
GRID_SEED = 20240601  # the fixed-noise grid has its own seed, so changing train.seed keeps the grid's z
EVAL_SEED = GRID_SEED + 1  # the fixed noise of the evaluations during training


def mix(*xs: int) -> int:
    """A 63-bit seed from integers (SplitMix64-style), so (seed, epoch) and (seed, step) streams differ."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ (x & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def seeded_rng(seed: int) -> torch.Generator:
    """A new CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A CPU generator for one purpose (``stream``) at one step (or row, or epoch)."""
    return seeded_rng(mix(seed, step, stream))
