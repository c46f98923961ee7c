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
        self._on: dict[torch.device, tuple[torch.Tensor, ...]] = {}  # device copies (gather)

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

    def gather(
        self, index: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch built on ``index``'s device from a copy of the whole set kept there
        (``prunebench.data.DeviceLoader``): the same normalisation, zero pad, crop and flip as
        :meth:`__getitem__`, one draw per sample from ``generator``."""
        device = index.device
        if device not in self._on:
            self._on[device] = tuple(
                t.to(device) for t in (self.images, self.labels, self.mean, self.std)
            )
        images, labels, mean, std = self._on[device]
        x = (images[index].float() / 255 - mean) / std
        if self.augment:
            b, c, h, w = x.shape
            x = torch.nn.functional.pad(x, (self.pad,) * 4)
            top, left = torch.randint(
                0, 2 * self.pad + 1, (2, b, 1), device=device, generator=generator
            )
            rows = (top + torch.arange(h, device=device))[:, None, :, None]
            cols = (left + torch.arange(w, device=device))[:, None, None, :]
            x = x[
                torch.arange(b, device=device)[:, None, None, None],
                torch.arange(c, device=device)[None, :, None, None],
                rows,
                cols,
            ]
            flip = torch.rand(b, device=device, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x, labels[index]


def cap(arrays: tuple[np.ndarray, np.ndarray], n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` samples (all when ``n`` is None)."""
    return arrays if n is None else (arrays[0][:n], arrays[1][:n])
