"""The data module contract the core calls, and the one implementation every task uses.

The pipeline trains and evaluates through Lightning's train/val/test loaders and gives methods a
calibration subset of the training split (CaP's statistics, KCP's and LAPP's checks) through
:meth:`DataModule.calib_dataloader`. A task hands its three datasets to :class:`SplitData`
(``Task.datamodule``); nothing in the core knows how a task reads its files.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from prunebench.sampling import EpochRandomSampler


class DataModule(pl.LightningDataModule, ABC):
    """Train / val / test loaders (Lightning's) plus the calibration loader methods read."""

    train_set: Dataset

    @abstractmethod
    def calib_dataloader(self, fraction: float) -> DataLoader:
        """A seeded ``fraction`` (in (0, 1]) of the training split, in a fixed order."""


class SplitData(DataModule):
    """Train / val / test datasets with seeded shuffling: the training order of epoch e is a
    function of (seed, e) alone, so a resumed run reads the batches an uninterrupted one does.
    Every task's data module is this one (or a subclass setting the two class attributes)."""

    drop_last_train = False  # drop the last incomplete training batch (when there is a full one)
    min_calib = 1  # the calibration subset's least size

    def __init__(
        self,
        train: Dataset,
        val: Dataset,
        test: Dataset,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        source: str = "embedded",
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.train_set, self.val_set, self.test_set = train, val, test
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.source, self.pin_memory = source, pin_memory

    @classmethod
    def from_config(
        cls, train: Dataset, val: Dataset, test: Dataset, batch_size: int, seed: int, data: dict
    ) -> SplitData:
        """The module for a task's splits under the run's ``data`` config (source, workers, pinning)."""
        return cls(
            train,
            val,
            test,
            batch_size=batch_size,
            seed=seed,
            num_workers=int(data.get("num_workers", 0)),
            source=data.get("source", "embedded"),
            pin_memory=bool(data.get("pin_memory", False)),
        )

    def _loader(self, ds: Dataset, shuffle: bool, drop_last: bool = False) -> DataLoader:
        # The loader's own generator only seeds worker processes; the order is the sampler's.
        gen = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            ds,
            self.batch_size,
            sampler=EpochRandomSampler(ds, self.seed) if shuffle else None,
            generator=gen,
            drop_last=drop_last and len(ds) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True, self.drop_last_train)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)

    def calib_dataloader(self, fraction: float) -> DataLoader:
        """A seeded ``fraction`` of the training split, without augmentation-order randomness."""
        n = len(self.train_set)
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))[
            : max(self.min_calib, int(fraction * n))
        ]
        return self._loader(torch.utils.data.Subset(self.train_set, idx.tolist()), False)
