"""Segmentation data: joint image/label transforms, in-memory and on-disk datasets, loaders.

Images are normalised float tensors (3, H, W); labels int64 (H, W) with 255 = ignore. Training
uses the DeepLab augmentation: random scale, then a random crop (padded with the mean colour and
the ignore label where the scaled image is smaller), then a horizontal flip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from prunebench.data import SplitData

IGNORE = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (3, H, W) or (H, W, 3) → float (3, H, W), per-channel standardised."""
    x = torch.from_numpy(np.ascontiguousarray(image))
    if x.shape[-1] == 3 and x.shape[0] != 3:
        x = x.permute(2, 0, 1)
    x = x.float() / 255
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def scale(x: torch.Tensor, y: torch.Tensor, factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize image (bilinear) and label (nearest) by ``factor``."""
    if factor == 1.0:
        return x, y
    h, w = (max(1, round(s * factor)) for s in y.shape)
    x = F.interpolate(x[None], (h, w), mode="bilinear", align_corners=False)[0]
    y = F.interpolate(y[None, None].float(), (h, w), mode="nearest")[0, 0].long()
    return x, y


def pad_to(x: torch.Tensor, y: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad bottom/right to at least (h, w): image with 0 (the mean colour), label with 255."""
    ph, pw = max(0, h - y.shape[0]), max(0, w - y.shape[1])
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
        y = F.pad(y, (0, pw, 0, ph), value=IGNORE)
    return x, y


def random_scale_crop_flip(
    x: torch.Tensor,
    y: torch.Tensor,
    crop: tuple[int, int],
    scale_range: tuple[float, float],
    gen: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepLab's training augmentation (draws from ``gen``, or torch's global generator)."""
    lo, hi = scale_range
    factor = lo + (hi - lo) * float(torch.rand((), generator=gen))
    x, y = pad_to(*scale(x, y, factor), *crop)
    top = int(torch.randint(0, y.shape[0] - crop[0] + 1, (), generator=gen))
    left = int(torch.randint(0, y.shape[1] - crop[1] + 1, (), generator=gen))
    x, y = (
        x[:, top : top + crop[0], left : left + crop[1]],
        y[top : top + crop[0], left : left + crop[1]],
    )
    if float(torch.rand((), generator=gen)) < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    return x, y


class SegmentationDataset(Dataset):
    """Samples from ``load(i) → (uint8 image, uint8/int label)``, normalised, then either the
    training augmentation (``crop`` and ``scale_range`` given) or, for evaluation, a resize by
    ``eval_scale`` and a pad to ``eval_size`` (so a batch stacks; padded pixels are ignored)."""

    def __init__(
        self,
        n: int,
        load: Callable[[int], tuple[np.ndarray, np.ndarray]],
        mean: Sequence[float],
        std: Sequence[float],
        crop: tuple[int, int] | None = None,
        scale_range: tuple[float, float] = (1.0, 1.0),
        eval_size: tuple[int, int] | None = None,
        eval_scale: float = 1.0,
    ) -> None:
        self.n, self.load, self.mean, self.std = n, load, tuple(mean), tuple(std)
        self.crop, self.scale_range = crop, tuple(scale_range)
        self.eval_size, self.eval_scale = eval_size, eval_scale

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.load(i)
        x = normalise(image, self.mean, self.std)
        y = torch.from_numpy(np.asarray(label, dtype=np.int64))
        if self.crop is not None:
            return random_scale_crop_flip(x, y, self.crop, self.scale_range)
        x, y = scale(x, y, self.eval_scale)
        if self.eval_size is not None:
            if y.shape[0] > self.eval_size[0] or y.shape[1] > self.eval_size[1]:
                raise ValueError(
                    f"image {i} is {tuple(y.shape)} after eval_scale {self.eval_scale}, larger "
                    f"than task.eval_size {self.eval_size}"
                )
            x, y = pad_to(x, y, *self.eval_size)
        return x, y


class SegmentationData(SplitData):
    """Train / val / test datasets with seeded, per-epoch shuffling (the core's ``SplitData``);
    the training loader drops its last incomplete batch and the calibration subset has at least
    two samples (the ASPP's image-pooling BN needs more than one sample per batch)."""

    drop_last_train = True
    min_calib = 2
