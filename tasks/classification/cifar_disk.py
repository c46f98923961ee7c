"""CIFAR-10 from the standard ``cifar-10-batches-py`` layout, read without torchvision.

torchvision's ``CIFAR10`` checks every file's md5, which no small test tree can pass; this reader
parses the pickled batches itself (the same format: a latin1 pickle dict with ``data``,
N×3072 uint8 in CHW order, and ``labels``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from prunebench.errors import DataError

LAYOUT = "<root>/cifar-10-batches-py/{data_batch_1..data_batch_5, test_batch}"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
    except Exception as exc:  # noqa: BLE001 — any parse failure is a layout problem
        raise DataError(
            f"{path} is not a CIFAR-10 batch ({exc}); expected layout {LAYOUT}"
        ) from exc
    if len(data) != len(labels):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data, labels


def load_cifar10(root: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the train and test splits.

    Raises:
        DataError: naming the path, the expected layout and the embedded alternative.
    """
    base = Path(root or "") / "cifar-10-batches-py"
    missing = [n for n in (*TRAIN_FILES, "test_batch") if not (base / n).is_file()]
    if root is None or missing:
        raise DataError(
            f"data.root={root!r}: {base} lacks {missing or 'the batches'}; expected layout "
            f"{LAYOUT}, or use data=embedded for the offline dataset"
        )
    parts = [_read_batch(base / n) for n in TRAIN_FILES]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return {"train": train, "test": _read_batch(base / "test_batch")}


def split_train_val(
    train: tuple[np.ndarray, np.ndarray], val_fraction: float, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Seeded hold-out (CIFAR-10: 45k/5k at val_fraction 0.1)."""
    n = len(train[1])
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return (train[0][train_idx], train[1][train_idx]), (train[0][val_idx], train[1][val_idx])
