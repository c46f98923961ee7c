"""Image-classification data: uint8 tensors in memory, pad-crop/flip augmentation, loaders."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from prunebench.running.sampling import EpochRandomSampler


class ImageTensorDataset(Dataset):
    """uint8 images (N, 3, H, W) and int64 labels; normalised per channel, optionally augmented
    with the CIFAR recipe (4-px zero pad, random crop, horizontal flip)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: bool = False,
        pad: int = 4,
    ) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.augment = augment
        self.pad = pad

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = (self.images[i].float() / 255 - self.mean) / self.std
        if self.augment:
            h, w = x.shape[1:]
            x = torch.nn.functional.pad(x, (self.pad,) * 4)
            top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            x = x[:, top : top + h, left : left + w]
            if torch.rand(()) < 0.5:
                x = x.flip(2)
        return x, self.labels[i]


class ClassificationData(pl.LightningDataModule):
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
    ) -> ClassificationData:
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


def cap(arrays: tuple[np.ndarray, np.ndarray], n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` samples (all when ``n`` is None)."""
    return arrays if n is None else (arrays[0][:n], arrays[1][:n])
