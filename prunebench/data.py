"""The data module contract the core calls, and the one implementation every task uses.

The pipeline trains and evaluates through Lightning's train/val/test loaders and gives methods a
calibration subset of the training split (CaP's statistics, KCP's and LAPP's checks) through
:meth:`DataModule.calib_dataloader`. A task hands its three datasets to :class:`SplitData`
(``Task.datamodule``); nothing in the core knows how a task reads its files.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Protocol, runtime_checkable

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from prunebench.errors import ConfigError
from prunebench.sampling import EpochRandomSampler, epoch_seed


@runtime_checkable
class DeviceResident(Protocol):
    """A dataset that can serve whole batches from a copy of itself on a device
    (``data.device_resident=true``): the task's half of :class:`DeviceLoader`."""

    def gather(
        self, index: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at ``index`` (a tensor on the target device), as one batch on that
        device, augmented (if the dataset augments) with random draws from ``generator``."""


class DeviceLoader:
    """Batches gathered on the device from a :class:`DeviceResident` dataset: no worker
    processes, no host-to-device copy per batch.

    The order is :class:`~prunebench.sampling.EpochRandomSampler`'s (Lightning calls
    ``sampler.set_epoch`` as for a ``DataLoader``), so it is the CPU loader's order; the
    augmentation's random draws come from a device generator seeded by (seed, epoch, rank), so
    they differ from the CPU loader's per-sample draws (same distribution, other numbers: a
    device-resident run is its own point). Under DDP each rank takes every ``world_size``-th
    sample of the order, padded to equal shares as ``DistributedSampler`` pads."""

    def __init__(
        self,
        dataset: DeviceResident,
        batch_size: int,
        seed: int,
        shuffle: bool,
        drop_last: bool,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.dataset, self.batch_size, self.seed = dataset, batch_size, int(seed)
        self.device, self.rank, self.world_size = device, rank, world_size
        self.sampler = EpochRandomSampler(dataset, seed) if shuffle else None
        self.batch_sampler = None  # Lightning reads both, as on a DataLoader
        self.drop_last = drop_last and self._share() > batch_size

    def _share(self) -> int:
        """Samples per rank and epoch."""
        return math.ceil(len(self.dataset) / self.world_size)

    def __len__(self) -> int:
        n = self._share()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _order(self) -> torch.Tensor:
        n = len(self.dataset)
        order = torch.tensor(list(self.sampler)) if self.sampler else torch.arange(n)
        total = self._share() * self.world_size
        if total > n:  # pad with the order's head, as DistributedSampler does
            order = torch.cat([order, order[: total - n]])
        return order[self.rank :: self.world_size]

    def __iter__(self):
        order = self._order().to(self.device)
        generator = None
        if self.sampler is not None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(epoch_seed(self.seed, self.sampler.epoch, self.rank, 1))
        for b in range(len(self)):
            yield self.dataset.gather(
                order[b * self.batch_size : (b + 1) * self.batch_size], generator
            )


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
        device_resident: bool = False,
    ) -> None:
        super().__init__()
        self.train_set, self.val_set, self.test_set = train, val, test
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.source, self.pin_memory = source, pin_memory
        if device_resident:
            kinds = {
                type(d).__name__ for d in (train, val, test) if not isinstance(d, DeviceResident)
            }
            if kinds:
                raise ConfigError(
                    f"data.device_resident=true: this task's {', '.join(sorted(kinds))} cannot be "
                    "kept on the device; it works for in-memory image sets (the CIFAR tasks, "
                    "embedded ImageNet stand-ins); choices here: false"
                )
        self.device_resident = device_resident

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
            device_resident=bool(data.get("device_resident", False)),
        )

    def _loader(self, ds: Dataset, shuffle: bool, drop_last: bool = False) -> DataLoader:
        if self.device_resident:  # the trainer's device once Lightning has attached one
            trainer = self.trainer
            return DeviceLoader(  # type: ignore[return-value]
                ds,  # type: ignore[arg-type]
                self.batch_size,
                self.seed,
                shuffle,
                drop_last,
                trainer.strategy.root_device if trainer else torch.device("cpu"),
                trainer.global_rank if trainer else 0,
                trainer.world_size if trainer else 1,
            )
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
