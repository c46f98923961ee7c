"""Stereo (PSMNet): the paper model's MACs and params, the metrics on hand-made maps,
input-shape errors, and every method and control at the smoke tier on the embedded pairs (the
readers, splits and renderer: tests/test_stereo_data.py)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import yaml
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from methods.cap_compensation import patch_vectors
from methods.magnitude import Magnitude
from prunebench.errors import ConfigError
from prunebench.method import CompressContext
from prunebench.reporting.records import checkpoint_file
from prunebench.running.checkpoint import load
from prunebench.running.module import make_optimizer
from prunebench.running.pipeline import Pipeline
from prunebench.surgery.bypass import Bypassed, make_bypass
from prunebench.surgery.masks import apply_masks
from prunebench.surgery.measure import count_macs, count_params
from prunebench.surgery.slim import slim
from prunebench.task import OptimSpec
from tasks.stereo.data import window
from tasks.stereo.metrics import stereo_loss, stereo_metrics
from tasks.stereo.psmnet import PSMNet
from tests.conftest import ROOT, make_cfg

METHODS = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))


def _task(stem: str = "stereo_psmnet_sceneflow", **over):
    cfg = yaml.safe_load((ROOT / "conf" / "task" / f"{stem}.yaml").read_text())
    return instantiate({**cfg, **over}, _convert_="all")


def test_paper_model_macs_and_params():
    # 256×512, maxdisp 192, the reference table: the shared extractor counted twice (it runs on both
    # views), transposed 3D convs per input voxel, cost volume / upsampling / soft-argmin not
    # counted. Shapes only: the count runs on the meta device (no arithmetic, ~2 s).
    task = _task()
    assert (task.input_size, task.maxdisp, task.width) == ((256, 512), 192, 1.0)
    assert count_params(task.build_model()) == 5_224_768
    model = task.build_model().to("meta")
    macs = count_macs(model, task.example_input().to("meta"))
    assert macs.total == 184_695_472_128  # ≈ 184.7 G
    extractor = sum(v for k, v in macs.per_module.items() if k.startswith("feature_extraction"))
    # one view's extractor by hand: firstconv + the four stages + SPP + lastconv at 128×256 / 64×128
    h2, h4 = 128 * 256, 64 * 128
    first = h2 * 9 * (3 * 32 + 32 * 32 + 32 * 32)
    layer1 = 3 * 2 * h2 * 9 * 32 * 32
    layer2 = h4 * (9 * 32 * 64 + 9 * 64 * 64 + 32 * 64) + 15 * 2 * h4 * 9 * 64 * 64
    layer3 = h4 * (9 * 64 * 128 + 9 * 128 * 128 + 64 * 128) + 2 * 2 * h4 * 9 * 128 * 128
    layer4 = 3 * 2 * h4 * 9 * 128 * 128
    spp = sum((64 // p) * (128 // p) * 128 * 32 for p in (64, 32, 16, 8))
    last = h4 * (9 * 320 * 128 + 128 * 32)
    assert extractor == 2 * (first + layer1 + layer2 + layer3 + layer4 + spp + last)
    # a transposed conv counts C_in·C_out·27 per *input* voxel: dres2.conv6 reads 1/8 resolution
    assert macs.per_module["dres2.conv6.0"] == (48 // 2) * (64 // 2) * (128 // 2) * 64 * 32 * 27


def test_tiers_shrink_the_model_and_say_so():
    cpu = _task(tier="cpu")
    assert (cpu.input_size, cpu.maxdisp, cpu.width, cpu.spp_pools) == (
        (64, 128),
        32,
        0.25,
        (16, 8, 4, 2),
    )
    assert count_macs(cpu.build_model(), cpu.example_input()).total == 311_694_336
    assert _task(tier="paper").maxdisp == 192


def test_bad_input_shapes_are_refused_clearly():
    model = PSMNet(16, 0.25, (8, 4, 2, 1)).eval()
    with pytest.raises(ConfigError, match=r"48×72: H and W must be multiples of 16"):
        model(torch.zeros(1, 6, 48, 72))
    with pytest.raises(ConfigError, match=r"≥ 32 \(4 × the largest SPP pool 8\)"):
        model(torch.zeros(1, 6, 16, 64))
    with pytest.raises(ConfigError, match="maxdisp=20"):
        PSMNet(20)
    with pytest.raises(ValueError, match=r"\(B, 6, H, W\)"):
        model(torch.zeros(1, 3, 32, 64))
    with pytest.raises(InstantiationException, match="250×512: H and W must be multiples"):
        _task(input_size=[250, 512])
    x, d = torch.zeros(6, 10, 20), torch.zeros(10, 20)
    with pytest.raises(ConfigError, match="crop 16×8 is larger than the 10×20 image"):
        window(x, d, "random", (16, 8))


def test_epe_d1_and_3px_on_hand_made_maps():
    gt = torch.tensor([[[10.0, 100.0, float("nan"), 2.0], [50.0, 200.0, 0.0, 4.0]]])
    pred = torch.tensor([[[11.0, 104.0, 7.0, 6.0], [54.0, 0.0, 0.5, 4.0]]])
    m = stereo_metrics(maxdisp=192)
    for metric in m.values():
        metric.update(pred, gt)
    # valid: finite and < 192 → 10, 100, 2, 50, 0, 4 (200 and NaN excluded); errors 1, 4, 4, 4, 0.5, 0
    assert float(m["epe"].compute()) == pytest.approx(13.5 / 6)
    # > 3 px: 100 (4), 2 (4), 50 (4); and > 5 % of gt: 4 > 5 (no), 4 > 0.1 (yes), 4 > 2.5 (yes)
    assert float(m["3px"].compute()) == pytest.approx(3 / 6)
    assert float(m["d1"].compute()) == pytest.approx(2 / 6)
    # pixel-weighted: a second update with one more valid pixel counts as one pixel, not a batch
    m["epe"].update(torch.tensor([[9.0]]), torch.tensor([[0.0]]))
    assert float(m["epe"].compute()) == pytest.approx((13.5 + 9) / 7)


def test_loss_weights_the_three_outputs():
    gt = torch.tensor([[[1.0, float("nan")]]])
    preds = tuple(torch.tensor([[[1.0 + k, 50.0]]]) for k in (1, 2, 3))  # errors 1, 2, 3
    # smooth L1 (β = 1): 0.5, 1.5, 2.5 → 0.5·0.5 + 0.7·1.5 + 1.0·2.5
    assert float(stereo_loss(preds, gt, 192)) == pytest.approx(0.25 + 1.05 + 2.5)
    assert float(stereo_loss(preds[2], gt, 192)) == pytest.approx(2.5)


SMOKE_OVERRIDES = {"cap": ("method.ridge=1e-6", "method.search_steps=1", "method.target_iters=2")}


@pytest.fixture(scope="module")
def baseline_cache(tmp_path_factory) -> Path:
    """One baseline cache for every method below (the same config trains the same baseline)."""
    return tmp_path_factory.mktemp("stereo_cache")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_embedded_stereo(tmp_path, baseline_cache, method):
    cfg = make_cfg(
        tmp_path,
        "task=stereo",
        f"method={method}",
        "target.macs_reduction=0.4",
        f"paths.cache_dir={baseline_cache}",
        *SMOKE_OVERRIDES.get(method, ()),
    )
    rec = Pipeline(cfg).run()
    assert rec["status"] == "ok" and rec["task"] == "stereo_psmnet_sceneflow"
    assert rec["metric"] == "test/epe" and rec["higher_is_better"] is False
    keys = {f"test/{p}{k}" for p in ("", "motorcycle/") for k in ("epe", "d1", "3px")}
    assert set(rec["test"]) == keys
    assert all(math.isfinite(v) and v >= 0 for v in rec["test"].values())
    macs = rec["macs"]
    assert macs["dense"] == 67_427_328  # the smoke model: 32×64, maxdisp 16, width 0.25
    assert rec["achieved_macs_reduction"] == pytest.approx(1 - macs["compressed"] / macs["dense"])
    if method == "dense":
        assert macs["compressed"] == macs["dense"] and rec["test"] == rec["baseline"]["test"]
    elif rec["target_macs_reduction"] is not None and method != "lapp":
        assert abs(rec["achieved_macs_reduction"] - 0.4) <= 0.01
    else:  # TRP's own reduction; LAPP's thresholds (one 3D channel is ~3 % of this tiny model)
        assert 0 < rec["achieved_macs_reduction"] < 0.6
    # the compressed checkpoint rebuilds the slimmed model with the MACs the run realised
    loaded = load(checkpoint_file(rec))
    assert count_macs(loaded, torch.zeros(1, 6, 32, 64)).total == macs["realised"]


def test_masked_equals_slimmed_on_psmnet():
    task = _task(tier="smoke")
    torch.manual_seed(0)
    model = task.build_model().double().eval()
    for mod in model.modules():  # non-trivial BN statistics, so a wrong channel would show
        if isinstance(mod, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 6, 32, 64, dtype=torch.float64)
    prunable, protected = task.prunable_layers(model), task.protected_layers(model)
    ctx = CompressContext.build(model, x[:1], prunable, protected, 0.5, 0)
    assert len(ctx.structure.groups) == len(prunable) == 38
    plan = Magnitude("uniform").compress(ctx)
    slimmed = slim(model, plan, x[:1], ctx.structure).eval()
    reduction = 1 - count_macs(slimmed, x[:1]).total / count_macs(model, x[:1]).total
    assert (
        reduction == pytest.approx(ctx.mac_model.plan_reduction(plan))
        and abs(reduction - 0.5) < 0.01
    )
    masked = apply_masks(copy.deepcopy(model), plan, ctx.structure).eval()
    with torch.no_grad():
        torch.testing.assert_close(masked(x), slimmed(x), rtol=1e-9, atol=1e-9)
    for name in protected:  # the cost-volume layout and the classifiers' outputs are untouched
        torch.testing.assert_close(
            slimmed.get_submodule(name).weight.shape[0], model.get_submodule(name).weight.shape[0]
        )


def test_conv3d_and_dilated_convs_get_same_size_bypasses():
    x3, x2 = torch.randn(1, 4, 6, 8, 10), torch.randn(1, 4, 9, 9)
    conv3 = torch.nn.Conv3d(4, 5, 3, stride=2, padding=1, bias=False)
    dilated = torch.nn.Conv2d(4, 5, 3, padding=2, dilation=2, bias=False)
    for conv, x in ((conv3, x3), (dilated, x2)):
        for kind in ("conv1x1", "dwconv3x3"):
            b = Bypassed(conv, kind)
            assert b.kind == kind and b(x).shape == conv(x).shape
    assert isinstance(Bypassed(conv3, "conv1x1").bypass, torch.nn.Conv3d)
    with pytest.raises(ValueError, match=r"dilation·\(k-1\)/2 = \[2, 2\]"):
        make_bypass(torch.nn.Conv2d(4, 5, 3, padding=1, dilation=2), "conv1x1")


def test_conv3d_patch_vectors_reproduce_the_conv():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 7, 8)
    for conv in (
        torch.nn.Conv3d(3, 5, 3, stride=2, padding=1, bias=False),
        torch.nn.Conv3d(3, 5, (3, 1, 3), stride=(1, 2, 1), padding=(2, 0, 2), dilation=2),
    ):
        y = conv(x) - (0 if conv.bias is None else conv.bias.view(1, -1, 1, 1, 1))
        rows = patch_vectors(conv, x) @ conv.weight.reshape(5, -1).T  # (B·D'·H'·W', C_out)
        torch.testing.assert_close(rows.reshape(2, *y.shape[2:], 5).movedim(-1, 1), y)


def test_adam_recipe_builds_adam():
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = make_optimizer(
        [{"params": params}], OptimSpec(lr=1e-3, optimizer="adam", betas=(0.8, 0.9))
    )
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["betas"] == (0.8, 0.9)
    assert isinstance(make_optimizer([{"params": params}], OptimSpec(lr=0.1)), torch.optim.SGD)
    with pytest.raises(ConfigError, match="optimizer='rmsprop'; choices"):
        make_optimizer([{"params": params}], OptimSpec(lr=0.1, optimizer="rmsprop"))
    task = _task()
    assert task.recipe["baseline"].optimizer == "adam" and task.recipe["baseline"].milestones == ()


class _Replay(torch.nn.Module):
    """Stands in for the feature extractor: checks it is called on each view in turn (left, then
    right, as the authors' ``stackhourglass.py`` does) and returns the given features."""

    def __init__(self, views, features) -> None:
        super().__init__()
        self.calls = list(zip(views, features, strict=True))

    def forward(self, x):
        view, features = self.calls.pop(0)
        assert torch.equal(x, view)
        return features


def _bn_buffers(model):
    return {k: v for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def test_training_forward_runs_the_extractor_per_view():
    # Reference: the authors' order — the extractor on the left view, then on the right (BN
    # statistics per view, running statistics updated twice), then the 3D part on those features.
    torch.manual_seed(0)
    ours = PSMNet(16, 0.25, (8, 4, 2, 1)).double().train()
    ref, stacked = copy.deepcopy(ours), copy.deepcopy(ours)
    x = torch.randn(2, 6, 32, 64, dtype=torch.float64)
    with torch.no_grad():
        preds = ours(x)
        views = [x[:, :3], x[:, 3:]]
        features = [ref.feature_extraction(v) for v in views]
        extractor, ref.feature_extraction = ref.feature_extraction, _Replay(views, features)
        ref_preds = ref(x)
        assert not ref.feature_extraction.calls  # both views were asked for
        ref.feature_extraction = extractor
    assert len(preds) == 3
    for p, q in zip(preds, ref_preds, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    mine, theirs = _bn_buffers(ours), _bn_buffers(ref)
    assert mine.keys() == theirs.keys()
    for k in mine:
        torch.testing.assert_close(mine[k], theirs[k], rtol=0, atol=0)
    assert int(mine["feature_extraction.firstconv.0.1.num_batches_tracked"]) == 2
    assert int(mine["dres0.0.1.num_batches_tracked"]) == 1
    # the stacked pass (the extractor once on both views) is what this guards against: its
    # pooled statistics give other features and running statistics
    with torch.no_grad():
        both = stacked.feature_extraction(torch.cat(views, 0))
    assert not torch.allclose(both[:2], features[0], atol=1e-6)
    assert not torch.allclose(
        stacked.feature_extraction.firstconv[0][1].running_mean,
        ours.feature_extraction.firstconv[0][1].running_mean,
        atol=1e-6,
    )
