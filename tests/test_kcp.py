"""KCP: clustering on hand-made kernels, kernel-mask MACs by hand, slimming of what becomes whole,
Conv3d stacks, and the shared invariants on a CIFAR ResNet."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from methods.kcp import KCP, distance_to_centre, kmeans
from prunebench.method import CompressContext
from prunebench.plan import Plan, PlanEntry
from prunebench.surgery.masks import apply_masks
from prunebench.surgery.measure import count_macs
from prunebench.surgery.slim import slim
from tests.conftest import conv3d_stack


def _ctx(model, x, prunable, protected, target=0.5, seed=0) -> CompressContext:
    return CompressContext.build(model, x, prunable, protected, target, seed)


def test_input_channel_cluster_centre_kernel_is_nearest():
    v = torch.tensor([1.0, 2.0, -1.0, 0.5])
    # Kernels v, −v, c, 2v with c = (v − v + c + 2v)/4, i.e. c = 2v/3: c sits on the mean.
    w = torch.stack([v, -v, 2 * v / 3, 2 * v]).view(4, 1, 2, 2)
    d = distance_to_centre(w, torch.ones(4, 1, dtype=torch.bool), "input_channel", 0, 0)
    assert d[2, 0] < 1e-6 and int(d.argmin()) == 2
    assert d[0, 0] == pytest.approx(float((v - 2 * v / 3).norm()))


def test_layer_kmeans_two_tight_clusters():
    a, b = torch.tensor([5.0, 5.0]), torch.tensor([-5.0, -5.0])
    d1 = torch.tensor([0.1, -0.1])
    kernels = torch.stack([a + d1, a - d1, b + d1, b - d1, a])  # a: exactly the centre of cluster 1
    centres, assign = kmeans(kernels, 2, seed=0)
    assert assign[0] == assign[1] == assign[4] != assign[2] == assign[3]
    w = kernels.view(5, 1, 1, 2)
    d = distance_to_centre(w, torch.ones(5, 1, dtype=torch.bool), "layer_kmeans", 2, 0)
    assert int(d.argmin()) == 4 and d[4, 0] < 1e-12
    # Farthest first reverses the order: the centre kernel scores highest.
    model = nn.Sequential(nn.Conv2d(1, 5, 1), nn.Conv2d(5, 2, (1, 2)))
    model[1].weight.data = w.permute(1, 0, 2, 3).repeat(2, 1, 1, 1)[:2]
    ctx = _ctx(model, torch.zeros(1, 1, 1, 2), [], [])
    alive = ctx.alive_kernels(Plan())
    near = KCP(group="layer_kmeans", n_clusters=2).scores(ctx, alive)["1"]
    far = KCP(group="layer_kmeans", n_clusters=2, criterion="farthest").scores(ctx, alive)["1"]
    assert int(near[0].argmin()) == 4 and int(far[0].argmax()) == 4


def test_kmeans_is_seeded():
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(kmeans(x, 4, 7)[1], kmeans(x, 4, 7)[1])


class Tiny(nn.Module):
    """a: Conv(2→3, 3×3) → BN → ReLU → b: Conv(3→2, 3×3), on 4×4 inputs (padding 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn, self.b = (
            nn.Conv2d(2, 3, 3, padding=1),
            nn.BatchNorm2d(3),
            nn.Conv2d(3, 2, 3, padding=1),
        )

    def forward(self, x):
        return self.b(torch.relu(self.bn(self.a(x))))


def _kernel_plan(**masks: torch.Tensor) -> Plan:
    return Plan({k: PlanEntry.from_kernel_mask(m) for k, m in masks.items()})


def test_kernel_mask_macs_by_hand_and_unread_channel_is_slimmed():
    torch.manual_seed(0)
    m, x = Tiny().eval(), torch.zeros(1, 2, 4, 4)
    m.bn.running_mean.uniform_(-1, 1)
    ctx = _ctx(m, x, ["a"], ["b"])
    assert ctx.mac_model.dense_total == 3 * 2 * 9 * 16 + 2 * 3 * 9 * 16 == 1728
    ka = torch.ones(3, 2, dtype=torch.bool)
    ka[0, 0] = ka[1, 1] = False
    # a keeps 4 of 6 kernels: 864·4/6 = 576; b stays 864.
    assert ctx.mac_model.plan_macs(_kernel_plan(a=ka)) == 576 + 864
    # No filter of b reads channel 1 any more: a's filter 1 goes too (a: 2 filters × 2 = 4 kernels).
    kb = torch.ones(2, 3, dtype=torch.bool)
    kb[:, 1] = False
    plan = _kernel_plan(b=kb)
    assert ctx.mac_model.plan_macs(plan) == 576 + 576
    slimmed = slim(m, plan, x, ctx.structure).eval()
    assert slimmed.a.weight.shape[0] == 2 and slimmed.b.weight.shape[1] == 2
    masked = apply_masks(copy.deepcopy(m), plan, ctx.structure).eval()
    xs = torch.randn(4, 2, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(slimmed(xs), masked(xs))
    assert count_macs(slimmed, x).total == ctx.mac_model.plan_macs(plan)


def test_conv3d_stack():
    torch.manual_seed(0)
    model = conv3d_stack()
    x = torch.zeros(1, 2, 4, 6, 6)
    ctx = _ctx(model, x, ["3"], ["0", "6"], target=0.4)
    assert ctx.structure.kernel_layers == ["3"]
    plan = KCP(step_reduction=0.2).compress(ctx)
    assert abs(ctx.mac_model.plan_reduction(plan) - 0.4) <= 0.01
    slimmed = slim(model, plan, x, ctx.structure).eval()
    xs = torch.randn(2, 2, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(slimmed(xs), ctx.model.eval()(xs), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("group", "allocation"), [("input_channel", "uniform"), ("layer_kmeans", "global")]
)
def test_shared_invariants_on_resnet20(group, allocation):
    from tests.test_slim import X, _trained_like

    model = _trained_like(20)
    roots = [n for n, _ in model.named_modules() if n.startswith("layer") and n.endswith(".conv1")]
    plans = []
    for _ in range(2):
        ctx = _ctx(copy.deepcopy(model), X, roots, ["conv1", "fc"], target=0.5, seed=3)
        plans.append(KCP(group=group, allocation=allocation, step_reduction=0.25).compress(ctx))
    assert plans[0].to_dict() == plans[1].to_dict()  # same seed → same plan
    plan = plans[0]
    assert abs(ctx.mac_model.plan_reduction(plan) - 0.5) <= 0.01
    assert "conv1" not in plan.entries and all(e.kind == "kernel" for e in plan.entries.values())
    slimmed = slim(ctx.model, plan, X, ctx.structure).eval()
    xs = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(slimmed(xs), ctx.model.eval()(xs), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(slimmed.conv1.weight, model.conv1.weight)
    torch.testing.assert_close(slimmed.fc.weight, model.fc.weight)
    assert count_macs(slimmed, X).total >= ctx.mac_model.plan_macs(plan)  # realised ≥ analytic
