"""Segmentation (DeepLab via smp): params and MACs against torchvision's builder, mIoU by hand,
the VOC and Cityscapes readers on fake trees, the local backbone file, masked ≡ slimmed through
the ASPP's concat, and every method at the smoke tier on the embedded scenes."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from PIL import Image

from methods.magnitude import Magnitude
from prunebench.errors import ConfigError
from prunebench.method import CompressContext
from prunebench.reporting.records import checkpoint_file
from prunebench.running.checkpoint import load
from prunebench.running.pipeline import Pipeline
from prunebench.surgery.masks import apply_masks
from prunebench.surgery.measure import count_macs, count_params
from prunebench.surgery.slim import slim
from tasks.segmentation.disk import disk_readers
from tasks.segmentation.embedded import make_scenes
from tests.conftest import ROOT, make_cfg

METHODS = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))


def _task(stem: str = "seg_deeplabv3_voc", **over):
    cfg = yaml.safe_load((ROOT / "conf" / "task" / f"{stem}.yaml").read_text())
    return instantiate({**cfg, "tier": None, **over}, _convert_="all")


class _Out(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def test_params_and_macs_equal_torchvision_deeplabv3_r50():
    task = _task()
    model = task.build_model()
    tv = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, aux_loss=False, num_classes=21
    )
    assert count_params(model) == count_params(tv) == 39_638_869
    # Counted on the meta device (shapes only, instant). At 520×520 (torchvision's metadata
    # size) smp's and torchvision's builders agree: dilation moves no MACs.
    with torch.device("meta"):
        x = torch.zeros(1, 3, 520, 520)
        macs = count_macs(model.to("meta"), x).total
        assert macs == count_macs(_Out(tv).to("meta"), x).total == 168_731_205_888
        # ... and torchvision's with its FCN aux head reproduces the reference table (178.72 G).
        aux = torchvision.models.segmentation.deeplabv3_resnet50(
            weights=None, weights_backbone=None, aux_loss=True, num_classes=21
        )
        assert count_macs(_Out(aux).to("meta"), x).total == 178_721_945_088
    assert tuple(task.example_input().shape) == (1, 3, 520, 520)


def test_any_input_size_is_padded_to_the_output_stride():
    model = _task(encoder="resnet18", output_stride=16).build_model().eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 50)).shape == (1, 21, 33, 50)


def test_miou_is_one_confusion_matrix_over_the_set():
    metric = _task().metrics()
    miou, acc = metric["miou"], metric["pixel_acc"]
    # Batch 1: class 0 perfect (2 px), class 1 predicted as 2 (1 px), an ignored pixel predicted
    # as 3. Batch 2: class 2 right once. Classes 3–20 are absent from labels and predictions
    # (the ignored pixel's prediction does not count).
    for pred, label in (([0, 0, 2, 3], [0, 0, 1, 255]), ([2], [2])):
        logits = torch.nn.functional.one_hot(torch.tensor([pred]), 21).permute(0, 2, 1)[..., None]
        y = torch.tensor([label])[..., None]
        miou.update(logits.float(), y)
        acc.update(logits.float(), y)
    # IoU: class 0 = 2/2, class 1 = 0/1, class 2 = 1/2 → mean over the 3 present classes.
    assert float(miou.compute()) == pytest.approx((1 + 0 + 0.5) / 3)
    assert float(acc.compute()) == pytest.approx(3 / 4)  # 3 of the 4 counted pixels


def test_pretrained_backbone_loads_a_torchvision_resnet_state_dict(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = _task(encoder="resnet18", pretrained_backbone=str(path)).build_model()
    torch.testing.assert_close(model.encoder.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(ConfigError, match="r34.pth is not a torchvision resnet18"):
        _task(encoder="resnet18", pretrained_backbone=str(tmp_path / "r34.pth")).build_model()


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_voc_reader_prefers_trainaug_and_keeps_255(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    ids = [f"2007_{i:06d}" for i in range(6)]
    for i in ids:
        _png(voc / "JPEGImages" / f"{i}.jpg", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
        label = np.zeros((20, 30), np.uint8)
        label[5:10, 5:10], label[0] = 15, 255
        _png(voc / "SegmentationClass" / f"{i}.png", label)
        _png(voc / "SegmentationClassAug" / f"{i}.png", np.full((20, 30), 7, np.uint8))
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(ids[:3]))
    (lists / "val.txt").write_text("\n".join(ids[4:]))
    sizes = {"train": None, "val": None, "test": None}
    train, val, test = disk_readers("voc", tmp_path, 0.34, sizes)
    assert (len(train), len(val), len(test)) == (2, 1, 2)
    assert set(np.unique(test(0)[1])) == {0, 15, 255}
    assert train(0)[0].shape == (20, 30, 3)
    (lists / "train_aug.txt").write_text("\n".join(f"/JPEGImages/{i}.jpg x" for i in ids))
    train, val, test = disk_readers("voc", tmp_path, 0.25, sizes)
    assert len(train) + len(val) == 4  # val.txt ids leave the aug list
    assert set(np.unique(train(0)[1])) == {7}  # labels from SegmentationClassAug
    with pytest.raises(ConfigError, match="does not exist.*data=embedded"):
        disk_readers("voc", tmp_path / "nowhere", 0.1, sizes)


def test_cityscapes_reader_maps_label_ids_to_train_ids(tmp_path):
    ids = np.array([[7, 8, 26, 33], [0, 1, 6, 34]], np.uint8)  # road, sidewalk, car, bicycle; void
    for split in ("train", "val"):
        for k in range(2):
            stem = f"aachen_{k:06d}_000019"
            _png(tmp_path / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png",
                 np.full((2, 4, 3), 100, np.uint8))  # fmt: skip
            _png(tmp_path / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png", ids)
    sizes = {"train": None, "val": None, "test": 1}
    train, val, test = disk_readers("cityscapes", tmp_path, 0.5, sizes)
    assert (len(train), len(val), len(test)) == (1, 1, 1)
    np.testing.assert_array_equal(test(0)[1], [[0, 1, 13, 18], [255, 255, 255, 255]])


def test_embedded_scenes_are_seeded_and_labelled():
    x, y = make_scenes(8, seed=3, size=32)
    x2, y2 = make_scenes(8, seed=3, size=32)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert x.shape == (8, 3, 32, 32) and y.shape == (8, 32, 32)
    assert set(np.unique(y)) <= {0, 1, 2, 3, 4, 5, 255} and (y == 255).any() and (y == 0).any()
    assert len(set(np.unique(y)) - {0, 255}) >= 3  # several object classes


@pytest.mark.parametrize("arch", ["deeplabv3", "deeplabv3plus"])
def test_masked_equals_slimmed_through_the_aspp_concat(arch):
    task = _task(arch=arch, encoder="resnet18", output_stride=16, input_size=32)
    torch.manual_seed(0)
    model = task.build_model().eval()
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 32, 32)
    ctx = CompressContext.build(
        model, x[:1], task.prunable_layers(model), task.protected_layers(model), 0.5, 0
    )
    plan = Magnitude("uniform").compress(ctx)
    pooling = "decoder.aspp.convs.4.1" if arch == "deeplabv3" else "decoder.aspp.0.convs.4.1"
    assert pooling in plan.entries  # the image-pooling branch is pruned too
    slimmed = slim(model, plan, x[:1], ctx.structure).eval()
    realised = count_macs(slimmed, x[:1]).total
    assert realised == ctx.mac_model.plan_macs(plan)  # the analytic count follows the concat
    assert abs(1 - realised / count_macs(model, x[:1]).total - 0.5) < 0.01
    masked = apply_masks(copy.deepcopy(model), plan, ctx.structure).eval()
    with torch.no_grad():
        torch.testing.assert_close(masked(x), slimmed(x), rtol=1e-4, atol=1e-4)
    head = slimmed.segmentation_head[0]
    torch.testing.assert_close(head.weight, model.segmentation_head[0].weight)


def test_poly_schedule_and_backbone_lr_multiplier():
    from prunebench.running.module import lr_groups, warmup_then_poly

    f = warmup_then_poly(0, 0.1, 100, 0.9)
    assert f(0) == 1.0 and f(50) == pytest.approx(0.5**0.9) and f(100) == 0.0
    model = _task(encoder="resnet18").build_model()
    groups = lr_groups(model, 0.01, {"encoder": 0.1})
    assert [g["lr"] for g in groups] == [pytest.approx(0.001), 0.01]
    assert sum(p.numel() for p in groups[0]["params"]) == count_params(model.encoder)
    with pytest.raises(ConfigError, match="backbone"):
        lr_groups(model, 0.01, {"backbone": 0.1})


def test_a_tier_may_swap_recipe_fields_of_a_stage_and_names_a_bad_stage():
    task = _task(tier={"recipe": {"baseline": {"lr_mult": {"encoder": 1.0}}}})
    assert task.recipe["baseline"].lr_mult == {"encoder": 1.0}
    assert task.recipe["baseline"].lr == 0.01 and task.recipe["baseline"].schedule == "poly"
    assert task.recipe["finetune"].lr_mult == {"encoder": 0.1}  # untouched stage
    bad = (ConfigError, InstantiationException)  # hydra wraps it; the pipeline unwraps it
    with pytest.raises(bad, match=r"\['pretrain'\].*\['baseline', 'finetune'\]"):
        _task(tier={"recipe": {"pretrain": {"lr": 1.0}}})


# Smoke-tier shortcuts that keep each run to seconds without changing what is checked: KCP in
# two steps, TRP projecting every 4th step, CaP with a short search. CaP is still marked slow: its
# float64 greedy ranking over ResNet-18's 4,608-wide inputs takes ~240 s on this CPU (it passes).
SMOKE_OVERRIDES = {
    "kcp": ("method.step_reduction=0.2",),
    "trp": ("method.period=4",),
    "cap": ("method.ridge=1e-6", "method.search_steps=2", "method.target_iters=2"),
}


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize(
    "method", [pytest.param(m, marks=pytest.mark.slow) if m == "cap" else m for m in METHODS]
)
def test_every_method_on_the_embedded_scenes(tmp_path, shared_cache, method):
    cfg = make_cfg(
        tmp_path,
        "task=segmentation",
        f"paths.cache_dir={shared_cache}",  # one smoke baseline for every method
        f"method={method}",
        "target.macs_reduction=0.4",
        *SMOKE_OVERRIDES.get(method, ()),
    )
    rec = Pipeline(cfg).run()
    assert rec["status"] == "ok" and rec["task"] == "seg_deeplabv3_voc"
    assert rec["config"]["task"]["tier"]["encoder"] == "resnet18"  # the smoke tier's model
    assert set(rec["test"]) == {"test/miou", "test/pixel_acc"}
    assert 0.0 <= rec["test"]["test/miou"] <= 1.0 and np.isfinite(rec["test"]["test/miou"])
    claimed = 1 - rec["macs"]["compressed"] / rec["macs"]["dense"]
    assert rec["achieved_macs_reduction"] == pytest.approx(claimed)
    if rec["plan_widths"] and rec["target_macs_reduction"] is not None:
        assert abs(rec["achieved_macs_reduction"] - 0.4) <= 0.01
    if method in ("magnitude", "random", "cap", "lapp"):  # filter plans: analytic = realised
        assert rec["macs"]["compressed"] == rec["macs"]["realised"]
    # The compressed checkpoint rebuilds the slimmed model: its counted MACs are the run's.
    loaded = load(checkpoint_file(rec))
    assert count_macs(loaded, torch.zeros(1, 3, 32, 32)).total == rec["macs"]["realised"]


def test_lapp_soft_macs_follow_the_aspp_concat_at_hard_masks():
    """LAPP's differentiable MACs term (prunebench/surgery/soft_macs.py) reads the ASPP projection's
    input as the concat of five branch groups: at hard masks it equals the shared count."""
    from methods.lapp import LAPP

    task = _task(encoder="resnet18", output_stride=16, input_size=32)
    torch.manual_seed(0)
    model = task.build_model().eval()
    method = LAPP(bypass="none")
    prunable = method.prepare(model, task.prunable_layers(model))
    x = torch.randn(1, 3, 32, 32)
    ctx = CompressContext.build(model, x, prunable, task.protected_layers(model), 0.5, 0)
    hooks = method.hooks(ctx)
    for i, t in enumerate(hooks.t.values()):
        t.data = torch.tensor(0.1 + 0.7 * (i % 5) / 4)  # 10 … 80 % of each layer cut
    plan = hooks.plan_at(model)
    assert "decoder.aspp.convs.4.1" in plan.entries
    assert float(hooks.macs(model).detach()) == ctx.mac_model.plan_macs(plan)
