"""Pascal VOC 2012 (+ SBD "trainaug") and Cityscapes in their standard on-disk layouts.

Each reader returns, per split, the list of (image path, label path) pairs; the training list is
split (seeded) into train and a held-out validation part for checkpoint selection, and the
official ``val`` list is the test split, evaluated once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from prunebench.errors import ConfigError

IGNORE = 255
# Cityscapes labelId → trainId (cityscapesScripts' table, as torchvision's Cityscapes.classes);
# every id not listed (void classes, license plate) is ignored.
CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
VOC_LAYOUT = (
    "VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png, "
    "ImageSets/Segmentation/{train,val}.txt} (optional: SegmentationClassAug/*.png and "
    "ImageSets/Segmentation/train_aug.txt)"
)
CITYSCAPES_LAYOUT = (
    "leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and "
    "gtFine/{train,val}/<city>/*_gtFine_labelIds.png"
)

Pairs = list[tuple[Path, Path]]


def _missing(root: Path | None, what: str, layout: str) -> ConfigError:
    where = "data.root is not set" if root is None else f"{what} does not exist"
    return ConfigError(
        f"{where}; expected under data.root: {layout} (or use data=embedded for generated data)"
    )


def _ids(list_file: Path) -> list[str]:
    """Image ids of a VOC list: one id a line, or DrSleep's ``/JPEGImages/x.jpg /Seg…/x.png``."""
    return [
        Path(line.split()[0]).stem for line in list_file.read_text().split("\n") if line.strip()
    ]


def voc_pairs(root: str | Path | None) -> dict[str, Pairs]:
    """``{"train": …, "test": …}``: train is ``train_aug.txt`` over ``SegmentationClassAug`` when
    both exist (the 10,582-image DeepLab set, VOC val excluded), else ``train.txt``; test is
    ``val.txt`` (1,449 images)."""
    if root is None:
        raise _missing(None, "", VOC_LAYOUT)
    voc = Path(root).expanduser() / "VOCdevkit" / "VOC2012"
    lists = voc / "ImageSets" / "Segmentation"
    for need in (voc / "JPEGImages", voc / "SegmentationClass", lists / "val.txt"):
        if not need.exists():
            raise _missing(Path(root), str(need), VOC_LAYOUT)
    aug_list = next(
        (p for p in (lists / "train_aug.txt", voc / "train_aug.txt") if p.is_file()), None
    )
    if aug_list is not None and (voc / "SegmentationClassAug").is_dir():
        train_ids, train_labels = _ids(aug_list), voc / "SegmentationClassAug"
    else:
        train_ids, train_labels = _ids(lists / "train.txt"), voc / "SegmentationClass"
    val_ids = set(_ids(lists / "val.txt"))
    pair = lambda i, labels: (voc / "JPEGImages" / f"{i}.jpg", labels / f"{i}.png")  # noqa: E731
    return {
        "train": [pair(i, train_labels) for i in train_ids if i not in val_ids],
        "test": [pair(i, voc / "SegmentationClass") for i in sorted(val_ids)],
    }


def cityscapes_pairs(root: str | Path | None) -> dict[str, Pairs]:
    """``{"train": …, "test": …}`` from ``train`` and ``val`` (sorted by file name)."""
    if root is None:
        raise _missing(None, "", CITYSCAPES_LAYOUT)
    base = Path(root).expanduser()
    out = {}
    for split, name in (("train", "train"), ("test", "val")):
        images = base / "leftImg8bit" / name
        if not images.is_dir():
            raise _missing(base, str(images), CITYSCAPES_LAYOUT)
        pairs = []
        for img in sorted(images.glob("*/*_leftImg8bit.png")):
            stem = img.name[: -len("_leftImg8bit.png")]
            label = base / "gtFine" / name / img.parent.name / f"{stem}_gtFine_labelIds.png"
            if not label.is_file():
                raise _missing(base, str(label), CITYSCAPES_LAYOUT)
            pairs.append((img, label))
        if not pairs:
            raise _missing(base, f"{images}/<city>/*_leftImg8bit.png", CITYSCAPES_LAYOUT)
        out[split] = pairs
    return out


def _lut(mapping: dict[int, int] | None) -> np.ndarray | None:
    if mapping is None:
        return None
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for k, v in mapping.items():
        lut[k] = v
    return lut


class PairReader:
    """``reader(i) → (uint8 RGB (H, W, 3), uint8 label (H, W))`` for a list of pairs; labels pass
    through a labelId → trainId table when one is given (Cityscapes)."""

    def __init__(self, pairs: Pairs, mapping: dict[int, int] | None = None) -> None:
        self.pairs, self.lut = pairs, _lut(mapping)

    def __len__(self) -> int:
        return len(self.pairs)

    def __call__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.pairs[i]
        image = np.asarray(Image.open(image_path).convert("RGB"))
        label = np.asarray(Image.open(label_path))  # palette indices (VOC) or ids
        if self.lut is not None:
            label = self.lut[label]
        return image, label


DATASETS = {
    "voc": (voc_pairs, None),
    "cityscapes": (cityscapes_pairs, CITYSCAPES_TRAIN_IDS),
}


def disk_readers(
    dataset: str, root: str | Path | None, val_fraction: float, sizes: dict
) -> tuple[PairReader, PairReader, PairReader]:
    """Train / val / test readers: a seeded (seed 0) ``val_fraction`` of the training list is held
    out for selection; ``sizes`` caps each split (None = all)."""
    if dataset not in DATASETS:
        raise ConfigError(f"task.dataset={dataset!r}; choices: {sorted(DATASETS)}")
    list_pairs, mapping = DATASETS[dataset]
    pairs = list_pairs(root)
    order = np.random.default_rng(0).permutation(len(pairs["train"]))
    n_val = max(1, int(round(val_fraction * len(order))))
    train = [pairs["train"][i] for i in sorted(order[n_val:])]
    val = [pairs["train"][i] for i in sorted(order[:n_val])]
    cap = lambda p, n: p if n is None else p[:n]  # noqa: E731
    return (
        PairReader(cap(train, sizes["train"]), mapping),
        PairReader(cap(val, sizes["val"]), mapping),
        PairReader(cap(pairs["test"], sizes["test"]), mapping),
    )
