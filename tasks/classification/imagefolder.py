"""ImageNet in the standard ``ImageFolder`` layout, with torchvision's reference transforms.

``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``; class indices are torchvision's
(sorted folder names), which is the order of its pretrained heads. A validation split of
``val_per_class`` images per class is held out of ``train`` (seeded) for checkpoint selection;
``root/val`` is the test split, evaluated once.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import datasets, transforms

from prunebench.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUT = "ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG (ImageFolder)"


def reference_transforms(crop: int = 224, resize: int = 256) -> dict[str, transforms.Compose]:
    """torchvision's classification reference presets: RandomResizedCrop + flip for training;
    resize 256 + centre crop 224 (bilinear) for evaluation; ImageNet mean/std."""
    norm = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    bilinear = transforms.InterpolationMode.BILINEAR
    return {
        "train": transforms.Compose(
            [
                transforms.RandomResizedCrop(crop, interpolation=bilinear),
                transforms.RandomHorizontalFlip(),
                *norm,
            ]
        ),
        "eval": transforms.Compose(
            [transforms.Resize(resize, interpolation=bilinear), transforms.CenterCrop(crop), *norm]
        ),
    }


class FolderSubset(Dataset):
    """``indices`` of an ``ImageFolder`` (scanned once), with this split's own transform."""

    def __init__(self, folder: datasets.ImageFolder, indices: list[int], transform) -> None:
        self.folder, self.indices, self.transform = folder, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.folder.samples[self.indices[i]]
        return self.transform(self.folder.loader(path)), label


def _folder(path: Path, split: str) -> datasets.ImageFolder:
    if not path.is_dir():
        raise ConfigError(
            f"data.root: {path} does not exist; expected {LAYOUT}, or use data=embedded"
        )
    if not any(p.is_dir() for p in path.iterdir()):
        raise ConfigError(
            f"{path} holds no class folders: the {split} split must be foldered by class "
            f"({LAYOUT}); the raw ILSVRC2012 val archive is flat and needs re-foldering "
            "(e.g. with the usual valprep.sh)"
        )
    return datasets.ImageFolder(str(path))


def _subset(indices: list[int], n: int | None, gen: torch.Generator) -> list[int]:
    """A seeded random ``n`` of ``indices`` (all, in order, when ``n`` is None): ImageFolder lists
    samples class by class, so taking the first ``n`` would take a few classes."""
    if n is None or n >= len(indices):
        return indices
    order = torch.randperm(len(indices), generator=gen)[:n].sort().values
    return [indices[i] for i in order.tolist()]


def imagefolder_splits(
    root: str | Path | None,
    sizes: dict,
    num_classes: int,
    val_per_class: int = 10,
    crop: int = 224,
    transforms: dict | None = None,
) -> tuple[Dataset, Dataset, Dataset]:
    """Train / val (held out of train) / test (``root/val``) datasets.

    Args:
        root: the folder holding ``train/`` and ``val/``.
        sizes: ``train``/``val``/``test`` caps (None = all), each a seeded random subset.
        num_classes: the model's outputs; the tree may have fewer classes, never more.
        val_per_class: images per class held out of ``train`` for selection (seed 0).
        transforms: ``{"train": …, "eval": …}`` (default: torchvision's reference presets at
            ``crop``; a timm model brings its own).
    """
    if root is None:
        raise ConfigError(f"data=disk needs data.root: {LAYOUT}; or use data=embedded")
    root = Path(root).expanduser()
    train_folder, test_folder = _folder(root / "train", "train"), _folder(root / "val", "val")
    if train_folder.classes != test_folder.classes:
        raise ConfigError(
            f"{root}: train/ has {len(train_folder.classes)} class folders, val/ has "
            f"{len(test_folder.classes)}; they must be the same wnids"
        )
    if len(train_folder.classes) > num_classes:
        raise ConfigError(
            f"{root} has {len(train_folder.classes)} classes but task.num_classes={num_classes}"
        )
    gen = torch.Generator().manual_seed(0)
    by_class: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(train_folder.samples):
        by_class.setdefault(label, []).append(i)
    held = set()
    for idx in by_class.values():
        pick = torch.randperm(len(idx), generator=gen)[: min(val_per_class, len(idx) - 1)]
        held.update(idx[j] for j in pick.tolist())
    train_idx = [i for i in range(len(train_folder.samples)) if i not in held]
    tf = transforms or reference_transforms(crop, round(crop * 256 / 224))
    return (
        FolderSubset(train_folder, _subset(train_idx, sizes["train"], gen), tf["train"]),
        FolderSubset(train_folder, _subset(sorted(held), sizes["val"], gen), tf["eval"]),
        FolderSubset(
            test_folder, _subset(list(range(len(test_folder))), sizes["test"], gen), tf["eval"]
        ),
    )
