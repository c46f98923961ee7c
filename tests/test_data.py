"""Embedded data is seeded and balanced; the disk reader parses the real CIFAR layout."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from prunebench.errors import DataError
from tasks.classification import CifarClassification
from tasks.classification.cifar_disk import load_cifar10, split_train_val
from tasks.classification.embedded import CLASSES, make_shapes

RECIPE = {"baseline": {"lr": 0.1, "batch_size": 4}, "finetune": {"lr": 0.01, "batch_size": 4}}


def test_embedded_is_deterministic_and_balanced():
    a, la = make_shapes(200, seed=5)
    b, lb = make_shapes(200, seed=5)
    c, _ = make_shapes(200, seed=6)
    assert a.shape == (200, 3, 32, 32) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert np.bincount(la, minlength=len(CLASSES)).tolist() == [20] * 10


def _fake_cifar(root, n_per_batch: int = 10) -> None:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            "data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, n_per_batch).tolist(),
            "batch_label": name,
        }
        with (base / name).open("wb") as f:
            pickle.dump(entry, f)
    with (base / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)


def test_disk_reader_parses_batches_and_splits(tmp_path):
    _fake_cifar(tmp_path)
    raw = load_cifar10(str(tmp_path))
    assert raw["train"][0].shape == (50, 3, 32, 32) and raw["test"][0].shape == (10, 3, 32, 32)
    # CHW order: the first 1024 bytes of a row are the red plane.
    with (tmp_path / "cifar-10-batches-py" / "data_batch_1").open("rb") as f:
        row = pickle.load(f)["data"][0]
    assert np.array_equal(raw["train"][0][0, 0].ravel(), row[:1024])
    train, val = split_train_val(raw["train"], 0.1, seed=0)
    assert (len(train[1]), len(val[1])) == (45, 5)
    again = split_train_val(raw["train"], 0.1, seed=0)
    assert np.array_equal(val[0], again[1][0])


def test_disk_datamodule_sizes(tmp_path):
    _fake_cifar(tmp_path)
    task = CifarClassification("cifar10_resnet20", 20, RECIPE)
    dm = task.datamodule(
        {"source": "disk", "root": str(tmp_path), "val_fraction": 0.1},
        {"train": 20, "val": None, "test": None},
        seed=0,
    )
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (20, 5, 10)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and y.dtype.is_floating_point is False


@pytest.mark.parametrize("root", [None, "/nonexistent/datasets"])
def test_missing_root_names_layout_and_embedded(root):
    with pytest.raises(DataError, match=r"cifar-10-batches-py.*data=embedded"):
        load_cifar10(root)


def test_corrupt_batch_is_named(tmp_path):
    _fake_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar10(str(tmp_path))
