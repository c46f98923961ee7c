"""How many training-split samples a stage reads (CaP's "−90 % data" is about this figure)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader


class CountedLoader:
    """A loader that adds the samples of every batch it yields to a :class:`TrainUsage`."""

    def __init__(self, loader: DataLoader, usage: TrainUsage) -> None:
        self.loader, self.usage, self.dataset = loader, usage, loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.usage.seen += len(batch[0])
            yield batch


class TrainUsage:
    """Training-split samples one stage reads: ``seen`` counts every read (a sample read in
    each of 3 epochs counts 3), ``distinct`` the different samples (of ``split``)."""

    def __init__(self, split: int) -> None:
        self.split, self.seen, self.indices, self.everything = split, 0, set(), False
        self.partial = 0  # samples read in shortened epochs (an upper bound on their distinct)

    def add_passes(self, epochs: int, per_epoch: int | None = None) -> None:
        """``epochs`` passes over the split, each of ``per_epoch`` samples (None: all of it)."""
        if per_epoch is not None and per_epoch < self.split:
            self.seen += epochs * per_epoch
            self.partial += epochs * per_epoch
            return
        self.seen += epochs * self.split
        self.everything = self.everything or epochs > 0

    def counted(self, loader: DataLoader) -> CountedLoader:
        """``loader`` (over a ``Subset`` of the training split, or all of it), counted as read."""
        ds = loader.dataset
        if isinstance(ds, torch.utils.data.Subset):
            self.indices.update(int(i) for i in ds.indices)
        else:
            self.everything = True
        return CountedLoader(loader, self)

    def to_dict(self) -> dict[str, int]:
        distinct = (
            self.split if self.everything else min(self.split, len(self.indices) + self.partial)
        )
        return {"seen": self.seen, "distinct": distinct}
