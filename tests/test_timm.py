"""timm models as a task: roots found by tracing, depth-wise + squeeze-excite groups pruned
together (masked ≡ slimmed, analytic MACs = counted), attention MACs kept, grouped convs and
attention heads refused as groups, methods refusing by name before training, a smoke run whose
checkpoint reloads, and the task's config errors. The full method × family matrix is
``scripts/timm_coverage.py`` (docs/timm_coverage.md)."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from methods.cap import CaP
from methods.kcp import KCP
from methods.lapp import LAPP
from methods.magnitude import Magnitude
from methods.random import Random
from methods.spp import SPP
from methods.trp import TRP
from prunebench.errors import ConfigError
from prunebench.method import CompressContext
from prunebench.plan import Plan, PlanEntry
from prunebench.reporting.records import checkpoint_file
from prunebench.running.checkpoint import load
from prunebench.running.pipeline import Pipeline, _instantiate
from prunebench.surgery.masks import apply_masks
from prunebench.surgery.measure import count_macs
from prunebench.surgery.slim import slim
from prunebench.surgery.structure import Structure, find_roots
from tests.conftest import make_cfg

SMALL = (
    "budget.data.train=16",
    "budget.data.val=8",
    "budget.data.test=8",
    "budget.latency.batch=0",
    "task.embedded.size=32",
)


def _task(tmp_path, model: str, *over: str):
    cfg = make_cfg(tmp_path, "task=imagenet_timm", f"task.model={model}", *over)
    return _instantiate("task", OmegaConf.to_container(cfg.task, resolve=True))


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """ViT-Tiny at the smoke tier's 64 px: its task, model and a context over its traced roots."""
    task = _task(tmp_path_factory.mktemp("vit"), "vit_tiny_patch16_224")
    model = task.build_model().eval()
    x = task.example_input()
    roots, skipped = find_roots(model, x, task.protected_layers(model))
    ctx = CompressContext.build(model, x, roots, task.protected_layers(model), 0.3, 0)
    return task, model, x, roots, skipped, ctx


def _randomise_bn(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def test_mobilenetv3_depthwise_and_se_groups_slim_exactly(tmp_path):
    task = _task(tmp_path, "mobilenetv3_large_100")
    assert task.input_size == 64  # the smoke tier's stated input (the model's own is 224)
    torch.manual_seed(0)
    model = _randomise_bn(task.build_model())
    x = task.example_input(2)
    roots, skipped = find_roots(model, x[:1], task.protected_layers(model))
    assert "blocks.2.0.conv_pw" in roots and "blocks.2.0.se.conv_reduce" in roots
    assert "residual" in skipped["blocks.2.0.conv_pwl"]  # the stream stays whole
    assert "conv_stem" not in roots and "classifier" not in roots
    ctx = CompressContext.build(model, x[:1], roots, task.protected_layers(model), 0.3, 0)
    g = ctx.structure.groups["blocks.2.0.conv_pw"]
    # the depth-wise conv, its BN and the SE's expanding conv shrink with the expansion
    assert {"blocks.2.0.conv_dw", "blocks.2.0.bn2", "blocks.2.0.se.conv_expand"} <= set(
        g.out_members
    )
    assert set(g.in_members) == {"blocks.2.0.se.conv_reduce", "blocks.2.0.conv_pwl"}
    plan = Random("uniform").compress(ctx)
    slimmed = slim(model, plan, x[:1], ctx.structure).eval()
    assert ctx.mac_model.plan_macs(plan) == count_macs(slimmed, x[:1]).total
    assert slimmed.get_submodule("blocks.2.0.conv_dw").groups == len(plan.entries[g.root].keep)
    masked = apply_masks(copy.deepcopy(model), plan, ctx.structure).eval()
    with torch.no_grad():
        torch.testing.assert_close(masked(x), slimmed(x), rtol=1e-4, atol=1e-4)


def test_lapp_counts_a_squeeze_excite_group_it_leaves_whole_at_full_width(tmp_path):
    from methods.lapp import LAPPHooks

    task = _task(tmp_path, "mobilenetv3_large_100")
    model = _randomise_bn(task.build_model())
    x = task.example_input(1)
    roots, _ = find_roots(model, x, task.protected_layers(model))
    ctx = CompressContext.build(model, x, roots, task.protected_layers(model), 0.3, 0)
    hooks = LAPPHooks(LAPP(threshold_init=-1e3), ctx, prune_epochs=1)  # every σ = 1: all kept
    se = "blocks.2.0.se.conv_reduce"
    assert se in roots and se not in hooks.t  # no BatchNorm: LAPP leaves it whole
    assert hooks.widths(model, soft=True)[se] == ctx.structure.groups[se].size == 24  # whole
    assert hooks.soft_reduction(model) == pytest.approx(0.0, abs=1e-9)
    assert float(hooks.macs(model)) == pytest.approx(ctx.mac_model.dense_total)


def test_vit_attention_macs_stay_counted_and_heads_are_left_whole(vit):
    task, model, x, roots, skipped, ctx = vit
    assert roots == [f"blocks.{i}.mlp.fc1" for i in range(12)]
    assert "attention heads" in skipped["blocks.0.attn.qkv"]
    # q·kᵀ and attn·v belong to no leaf layer: the MAC model keeps them as a constant
    assert ctx.mac_model.constant > 0
    assert ctx.mac_model.dense_total == count_macs(model, x).total
    plan = Plan({"blocks.3.mlp.fc1": PlanEntry("filter", 768, list(range(0, 768, 3)))})
    slimmed = slim(model, plan, x, ctx.structure)
    assert slimmed.blocks[3].mlp.fc2.in_features == 256
    assert ctx.mac_model.plan_macs(plan) == count_macs(slimmed, x).total


@pytest.mark.parametrize(
    ("method", "reason"),
    [
        (KCP(), "no ungrouped, unprotected conv whose kernels"),
        (SPP(), "no ungrouped, unprotected conv whose columns"),
        (TRP(), "no ungrouped, unprotected stride-1 conv"),
        (LAPP(), "no prunable group of this model has one"),
        (CaP(), None),  # fc2 alone reads fc1's hidden channels: compensable
        (Magnitude(), None),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str | None) else "",
)
def test_method_refusals_on_a_vit(vit, method, reason):
    got = method.refusal(vit[-1])
    assert got is None if reason is None else reason in got


def test_scratch_rebuilds_linear_groups_and_refuses_a_model_without_groups(vit):
    from methods.scratch import Scratch

    task, model, x, roots, _, _ = vit
    fresh = task.build_model()
    assert all(isinstance(fresh.get_submodule(r), nn.Linear) for r in roots)  # the MLPs' fc1
    assert Scratch(bypass="conv1x1").prepare(fresh, roots) == roots  # no bypass beside a linear
    none = CompressContext.build(model, x, [], task.protected_layers(model), 0.3, 0)
    assert Scratch().refusal(none) == (
        "the model has no prunable channel group (inner channels of its blocks)"
    )


def test_unreachable_target_is_a_refusal(vit):
    ctx = vit[-1]
    far = CompressContext(**{**vars(ctx), "macs_reduction": 0.95})
    assert "target.macs_reduction=0.95 is beyond reach: one channel per group removes" in (
        Magnitude().refusal(far)
    )


def test_a_group_through_a_grouped_conv_is_refused():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1, groups=2)
    ).eval()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ConfigError, match=r"'0' cannot be pruned.*'2' is a grouped conv"):
        Structure(model, x, ["0"])
    roots, skipped = find_roots(model, x)
    assert roots == [] and "grouped conv" in skipped["0"]


def test_a_refusal_stops_the_run_before_any_data_or_training(tmp_path):
    cfg = make_cfg(
        tmp_path, "task=imagenet_timm", "task.model=vit_tiny_patch16_224", "method=lapp", *SMALL
    )
    p = Pipeline(cfg)
    with pytest.raises(ConfigError) as err:
        p.run()
    msg = str(err.value)
    assert msg.startswith("method 'lapp' cannot prune vit_tiny_patch16_224: LAPP's importance")
    assert "\n" not in msg
    assert not hasattr(p, "dm")  # refused before any data was read or anything trained
    assert not p.record_path.exists()


def test_smoke_run_on_a_depthwise_model_reloads_from_its_checkpoint(tmp_path):
    cfg = make_cfg(
        tmp_path,
        "task=imagenet_timm",
        "task.model=mobilenetv3_large_100",
        "method=magnitude",
        "target.macs_reduction=0.3",
        *SMALL,
    )
    rec = Pipeline(cfg).run()
    assert rec["status"] == "ok" and rec["task"] == "timm_mobilenetv3_large_100"
    assert abs(rec["achieved_macs_reduction"] - 0.3) <= 0.01
    assert rec["macs"]["compressed"] == rec["macs"]["realised"]  # filter plan: exact
    loaded = load(checkpoint_file(rec))
    x = torch.zeros(1, 3, 64, 64)
    assert count_macs(loaded, x).total == rec["macs"]["realised"]
    assert loaded(x).shape == (1, 1000)


def test_task_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="task.model='resnet_nonesuch' is not a timm model"):
        _task(tmp_path, "resnet_nonesuch")
    task = _task(tmp_path, "efficientnet_b0", "budget=paper")
    assert task.input_size == 224  # the paper tier: the model's own data config
    assert task.disk_transforms()["eval"].transforms[0].size == 256  # 224 / crop_pct 0.875
    model = task.build_model()
    wrong = tmp_path / "wrong.pth"
    torch.save(nn.Linear(2, 2).state_dict(), wrong)
    bad = _task(tmp_path, "efficientnet_b0", f"task.pretrained={wrong}")
    with pytest.raises(
        ConfigError, match="wrong.pth is not a state dict of timm's efficientnet_b0"
    ):
        bad.load_pretrained(model)
    good = tmp_path / "b0.pth"
    torch.save(model.state_dict(), good)
    assert _task(tmp_path, "efficientnet_b0", f"task.pretrained={good}").load_pretrained(
        task.build_model()
    ) == str(good)


def test_segmentation_takes_a_timm_encoder(tmp_path):
    cfg = make_cfg(tmp_path, "task=segmentation", "task.smoke.model.encoder=tu-regnety_016")
    task = _instantiate("task", OmegaConf.to_container(cfg.task, resolve=True))
    model = task.build_model().eval()
    assert task.protected_layers(model) == ["encoder.model.stem.conv", "segmentation_head.0"]
    roots = task.prunable_layers(model)
    assert "encoder.model.s1.b1.se.fc1" in roots and "decoder.aspp.project.0" in roots
    ctx = CompressContext.build(model, task.example_input(), roots, [], 0.1)
    assert ctx.structure.groups["encoder.model.s1.b1.se.fc1"].in_members == [
        "encoder.model.s1.b1.se.fc2"
    ]
    with pytest.raises(ConfigError, match="tu-regnety_016' is a timm encoder"):
        _instantiate(
            "task",
            {**OmegaConf.to_container(cfg.task, resolve=True), "pretrained_backbone": "x.pth"},
        ).build_model()
    bad = OmegaConf.to_container(cfg.task, resolve=True)
    bad["tier"]["encoder"] = "tu-nonesuch"
    with pytest.raises(ConfigError, match="tu-<a timm model name>"):
        _instantiate("task", bad).build_model()
