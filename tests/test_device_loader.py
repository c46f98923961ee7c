"""``data.device_resident``: batches gathered on the device. On the CPU device here: the
evaluation batches are bit-identical to the DataLoader's, the training order is the sampler's,
every augmented sample is one of its image's crops and flips, DDP shares cover the split, and
the option joins the point id and the baseline key only when set."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from prunebench.data import DeviceLoader, SplitData
from prunebench.errors import ConfigError
from prunebench.running.baseline import baseline_key
from prunebench.running.pipeline import Pipeline, point_id
from prunebench.running.preflight import check_data
from tasks.classification.data import ImageTensorDataset

CPU = torch.device("cpu")


def _set(n: int = 10, augment: bool = False) -> ImageTensorDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, 6, 5), dtype=np.uint8)
    return ImageTensorDataset(images, np.arange(n), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), augment, 2)


def test_evaluation_batches_equal_the_dataloaders_bit_for_bit():
    ds = _set()
    dm = SplitData(ds, ds, ds, batch_size=4, seed=0)
    cpu = list(dm.test_dataloader())
    dm.device_resident = True
    dev = list(dm.test_dataloader())
    assert isinstance(dm.test_dataloader(), DeviceLoader) and len(dev) == len(cpu) == 3
    for (xa, ya), (xb, yb) in zip(cpu, dev, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def _candidates(ds: ImageTensorDataset, i: int) -> list[torch.Tensor]:
    """Every crop and flip ``__getitem__`` can draw for image ``i``."""
    x = (ds.images[i].float() / 255 - ds.mean) / ds.std
    h, w = x.shape[1:]
    padded = torch.nn.functional.pad(x, (ds.pad,) * 4)
    crops = [
        padded[:, t : t + h, s : s + w]
        for t in range(2 * ds.pad + 1)
        for s in range(2 * ds.pad + 1)
    ]
    return crops + [c.flip(2) for c in crops]


def test_training_order_is_the_samplers_and_each_sample_a_crop_of_its_image():
    ds = _set(augment=True)
    loader = DeviceLoader(ds, 4, seed=3, shuffle=True, drop_last=False, device=CPU)
    reference = SplitData(ds, ds, ds, batch_size=4, seed=3).train_dataloader()
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        reference.sampler.set_epoch(epoch)
        batches = list(loader)
        labels = torch.cat([y for _, y in batches])
        assert labels.tolist() == list(reference.sampler)  # labels are the indices here
        for x, y in batches:
            for xi, i in zip(x, y.tolist(), strict=True):
                assert any(torch.equal(xi, c) for c in _candidates(ds, i))
    loader.sampler.set_epoch(1)
    again = list(loader)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    loader.sampler.set_epoch(0)
    assert not torch.equal(torch.cat([y for _, y in loader]), labels)


def test_augmentation_draws_cover_offsets_and_flips():
    ds = _set(n=1, augment=True)
    seen = set()
    loader = DeviceLoader(ds, 1, seed=0, shuffle=True, drop_last=False, device=CPU)
    cands = _candidates(ds, 0)
    for epoch in range(200):
        loader.sampler.set_epoch(epoch)
        ((x, _),) = list(loader)
        seen.add(next(k for k, c in enumerate(cands) if torch.equal(x[0], c)))
    assert len(seen) > 40  # of 50 (25 crops × 2 flips; a few coincide on random pixels: rare)


@pytest.mark.parametrize(
    ("n", "batch", "drop_last", "batches"), [(10, 4, False, 3), (10, 4, True, 2), (3, 4, True, 1)]
)
def test_length_and_drop_last(n, batch, drop_last, batches):
    loader = DeviceLoader(_set(n), batch, 0, True, drop_last, CPU)
    assert len(loader) == len(list(loader)) == batches


def test_ddp_shares_are_equal_and_cover_the_split():
    ds = _set(n=7)
    shares = [
        torch.cat([y for _, y in DeviceLoader(ds, 2, 0, True, False, CPU, rank, 2)]).tolist()
        for rank in (0, 1)
    ]
    assert len(shares[0]) == len(shares[1]) == 4  # ⌈7 / 2⌉, padded by one
    assert set(shares[0]) | set(shares[1]) == set(range(7))


def test_a_dataset_without_a_device_form_is_refused_by_name():
    plain = torch.utils.data.TensorDataset(torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(ConfigError, match=r"data.device_resident=true: .*TensorDataset.*choices"):
        SplitData(plain, plain, plain, 2, 0, device_resident=True)
    with pytest.raises(ConfigError, match="data.device_resident='yes': must be true or false"):
        check_data({"device_resident": "yes"})


def test_the_option_joins_point_id_and_baseline_key_only_when_set(cfg_factory):
    plain = OmegaConf.to_container(cfg_factory(), resolve=True)
    assert plain["data"]["device_resident"] is False
    before = {**plain, "data": {k: v for k, v in plain["data"].items() if k != "device_resident"}}
    assert point_id(plain) == point_id(before)  # ids made before the option keep their value
    assert baseline_key(plain) == baseline_key(before)
    on = OmegaConf.to_container(cfg_factory("data.device_resident=true"), resolve=True)
    assert point_id(on) != point_id(plain) and baseline_key(on) != baseline_key(plain)


def test_a_device_resident_run_trains_end_to_end(cfg_factory):
    tiny = ("budget.data.train=64", "budget.data.val=32", "budget.data.test=32")
    rec = Pipeline(cfg_factory("method=magnitude", "data.device_resident=true", *tiny)).run()
    assert rec["status"] == "ok" and rec["config"]["data"]["device_resident"] is True
    assert rec["train_samples"]["finetune"]["seen"] > 0 and 0 <= rec["test"]["test/top1"] <= 1
