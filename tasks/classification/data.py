"""Image-classification data: uint8 tensors in memory, pad-crop/flip augmentation. The loaders
are the core's (``prunebench.data.SplitData``)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


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


def cap(arrays: tuple[np.ndarray, np.ndarray], n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` samples (all when ``n`` is None)."""
    return arrays if n is None else (arrays[0][:n], arrays[1][:n])
