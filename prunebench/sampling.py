"""Shuffling that is a function of (seed, epoch) alone, so a run resumed at epoch k from a
checkpoint reads the same batches an uninterrupted run reads at epoch k."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import RandomSampler


def epoch_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence: nearby inputs, unrelated seeds)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


class EpochRandomSampler(RandomSampler):
    """A random permutation per epoch, drawn from ``epoch_seed(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before each training epoch (also after a resume). It stays a
    ``RandomSampler``, so under DDP Lightning replaces it with its ``DistributedSampler``, which
    is seeded by epoch too.
    """

    def __init__(self, data_source, seed: int) -> None:
        super().__init__(data_source, generator=torch.Generator())
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        self.generator.manual_seed(epoch_seed(self.seed, self.epoch))
        yield from super().__iter__()
