"""SPP: Δ(r) by hand, scripted probability updates and permanent removal, weight restoration,
column-slimmed convs ≡ masked convs with hand-counted MACs, and the shared invariants."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from methods.spp import SPP, SPPHooks, delta
from prunebench.method import CompressContext
from prunebench.plan import Plan, PlanEntry
from prunebench.running.module import clear_momentum
from prunebench.surgery.columns import ColumnConv
from prunebench.surgery.masks import apply_masks
from prunebench.surgery.measure import count_macs
from prunebench.surgery.slim import slim
from tests.conftest import conv3d_stack

A, U = 0.05, 0.25


@pytest.mark.parametrize("G", [1, 3, 7, 100])
def test_delta_anchor_points_and_centrosymmetry(G):
    N_c = 2 * G / 3  # −ln(u)/α = G·ln 4 / ln 8 = 2G/3 for u = 1/4
    at = lambda r: float(delta(torch.tensor([r], dtype=torch.float64), G, A, U)[0])  # noqa: E731
    assert at(0) == pytest.approx(A, abs=1e-15)
    assert at(N_c) == pytest.approx(U * A, abs=1e-15)
    assert at(G) == pytest.approx(0.0, abs=1e-15)
    if 1 < N_c:  # the first branch: A·exp(−α) = A·exp(−ln 8 / G)
        assert at(1) == pytest.approx(A * 8 ** (-1 / G), abs=1e-15)
    for x in (0.1, 0.5 * N_c, N_c):  # symmetric about (N_c, uA)
        assert at(N_c - x) + at(N_c + x) == pytest.approx(2 * U * A, abs=1e-15)
    r = torch.arange(0, 2 * G + 1, dtype=torch.float64)
    assert bool((delta(r, G, A, U).diff() < 0).all())  # decreasing: low ranks gain most
    assert bool((delta(r[r > G], G, A, U) < 0).all())  # above G: probability falls


def _one_layer(l1: list[float]) -> nn.Sequential:
    """A 1×1 conv with two filters whose column c has L1 norm l1[c] (both filters l1[c]/2)."""
    conv = nn.Conv2d(len(l1), 2, 1, bias=False)
    conv.weight.data = torch.tensor(l1).repeat(2, 1).view(2, len(l1), 1, 1) / 2
    return nn.Sequential(conv)


def test_scripted_probability_updates_and_permanent_removal():
    # Columns with L1 1, 2, 3, 4; prune 2 of them; A = 0.5 so a few updates suffice.
    model = _one_layer([1.0, 2.0, 3.0, 4.0])
    hooks = SPPHooks(SPP(A=0.5), {"0": 2}, seed=0)
    p = lambda: hooks.state["0"].p.flatten().tolist()  # noqa: E731
    s8 = math.sqrt(8)
    # G = 2: α = ln 8 / 2, N_c = 4/3; Δ(0) = 0.5, Δ(1) = 0.5/√8, Δ(2) = 0, Δ(3) = 0.25 − 0.5·√2.
    hooks.update(model)
    assert p() == pytest.approx([0.5, 0.5 / s8, 0.0, 0.0])
    assert hooks.state["0"].h.flatten().tolist() == pytest.approx([1.0, 2.0, 3.0, 4.0])
    hooks.update(model)  # column 0 reaches p = 1: pruned for good, its weights zeroed
    assert p() == pytest.approx([1.0, 1 / s8, 0.0, 0.0])
    assert hooks.state["0"].pruned.flatten().tolist() == [True, False, False, False]
    assert torch.equal(model[0].weight[:, 0], torch.zeros(2, 1, 1))
    assert hooks.state["0"].h.flatten().tolist() == pytest.approx([1.9, 3.8, 5.7, 7.6])
    # G = 1 among columns 1, 2, 3 (ranks 0, 1, 2): α = ln 8, N_c = 2/3; Δ = 0.5, 0, 0.25 − 2.
    hooks.update(model)
    assert p() == pytest.approx([1.0, 1 / s8 + 0.5, 0.0, 0.0])
    assert not hooks.state["0"].fixed
    hooks.update(model)  # column 1 reaches 1: the layer has its 2 columns and is fixed
    st = hooks.state["0"]
    assert st.pruned.flatten().tolist() == [True, True, False, False]
    assert st.fixed and p() == [1.0, 1.0, 0.0, 0.0]
    assert torch.equal(model[0].weight[:, :2], torch.zeros(2, 2, 1, 1))
    hooks.update(model)  # a fixed layer no longer changes
    assert p() == [1.0, 1.0, 0.0, 0.0] and st.updates == 4


@pytest.mark.parametrize("sampling", ["element", "column"])
def test_step_rule_restores_masked_weights_and_pruned_columns_stay_zero(sampling):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.Flatten(), nn.LazyLinear(2))
    x, y = torch.randn(4, 3, 5, 5), torch.tensor([0, 1, 0, 1])
    model(x)
    method = SPP(sampling=sampling, prune_interval=1000, restore="step", clear_momentum="never")
    hooks = SPPHooks(method, {"0": 20}, seed=1)
    hooks.update(model)
    st = hooks.state["0"]
    st.p.fill_(0.5)
    st.pruned[0, 1, 2] = True  # one column pruned for good
    st.p[0, 1, 2] = 1.0
    model[0].weight.data[:, 0, 1, 2] = 0.0
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    masks = []
    for step in range(1, 4):  # no probability update on these steps: p stays 0.5
        before = model[0].weight.detach().clone()
        hooks.batch_start(model, step)
        mask = hooks._masks["0"].bool().expand_as(before).clone()
        masks.append(mask)
        assert torch.equal(model[0].weight.detach(), before * mask)  # forward sees masked W
        if sampling == "column":
            assert bool((mask == mask[:1]).all())  # one draw per column
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        hooks.before_optimizer_step(model, step)
        assert bool((model[0].weight.grad[~mask] == 0).all())
        opt.step()
        hooks.after_optimizer_step(model, step)
        after = model[0].weight.detach()
        assert torch.equal(after[~mask], before[~mask])  # restored exactly
        assert bool((after[mask] != before[mask]).all())  # the others were updated
        assert torch.equal(after[:, 0, 1, 2], torch.zeros(8))  # pruned stays zero
        assert not mask[:, 0, 1, 2].any() and 0.2 < mask.float().mean() < 0.8
    assert not torch.equal(masks[0], masks[1])
    # Masks depend on (seed, step) only: the same step draws the same mask (every DDP rank).
    hooks.batch_start(model, 2)
    assert torch.equal(hooks._masks["0"].bool().expand_as(masks[1]), masks[1])
    hooks.after_optimizer_step(model, 2)


# One SGD step (lr 0.1, momentum 0.9, weight decay 0.01) on a 1×1 conv, 3 columns → 1 filter,
# x = (5, 7, 11), loss y²/2 and a fixed mask m = (0, 0, 1): column 1 masked (p = 1, not pruned),
# column 2 kept (p = 0), column 0 pruned for good (w = 0) or masked like column 1 (w = 4). Prior
# momentum 1 everywhere. Forward: y = 3·11 = 33 = ∂L/∂y in every case; raw ∂L/∂W = 33·x =
# (165, 231, 363).
STEP_CASES = {
    # the code: input gradient through the unmasked W = 33·W; a pruned column → masked gradients
    # zeroed; momentum of masked weights cleared; weight decay on the unmasked W.
    # m' = (0, 0, 0.9 + 363 + 0.03); W' = W − 0.1·m'.
    ("forward", "always", True): {
        "grad_x": [0.0, 66.0, 99.0],
        "w": [0.0, 2 - 0.1 * 0.02, 3 - 0.1 * 363.93],
        "momentum": [0.0, 0.02, 363.93],
    },
    # no column pruned yet: the gradients stay (d = 33·x + 0.01·W); momentum cleared where masked
    ("forward", "always", False): {
        "grad_x": [132.0, 66.0, 99.0],
        "w": [4 - 0.1 * 165.04, 2 - 0.1 * 231.02, 3 - 0.1 * 363.93],
        "momentum": [165.04, 231.02, 363.93],
    },
    # the last SPP code: momentum cleared only once the layer pruned a column (none here)
    ("forward", "once_pruned", False): {
        "grad_x": [132.0, 66.0, 99.0],
        "w": [4 - 0.1 * 165.94, 2 - 0.1 * 231.92, 3 - 0.1 * 363.93],
        "momentum": [165.94, 231.92, 363.93],
    },
    # ours: input gradient through W·m; gradients always zeroed; weight decay on W·m = (0, 0, 3);
    # momentum kept (0.9 where masked); masked weights restored after the step
    ("step", "never", True): {
        "grad_x": [0.0, 0.0, 99.0],
        "w": [0.0, 2.0, 3 - 0.1 * 363.93],
        "momentum": [0.9, 0.9, 363.93],
    },
    ("step", "never", False): {
        "grad_x": [0.0, 0.0, 99.0],
        "w": [4.0, 2.0, 3 - 0.1 * 363.93],
        "momentum": [0.9, 0.9, 363.93],
    },
}


@pytest.mark.parametrize(("restore", "momentum", "pruned"), list(STEP_CASES))
def test_one_sgd_step_per_rule_by_hand(restore, momentum, pruned):
    conv = nn.Conv2d(3, 1, 1, bias=False).double()
    model = nn.Sequential(conv)
    conv.weight.data = torch.tensor([0.0 if pruned else 4.0, 2.0, 3.0]).double().view(1, 3, 1, 1)
    hooks = SPPHooks(SPP(restore=restore, clear_momentum=momentum, prune_interval=100), {"0": 2}, 0)
    hooks._init(model)
    st = hooks.state["0"]
    st.p.view(-1)[:] = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)  # mask (0, 0, 1)
    st.pruned.view(-1)[0] = pruned
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    opt.state[conv.weight]["momentum_buffer"] = torch.ones_like(conv.weight)
    x = torch.tensor([5.0, 7.0, 11.0], dtype=torch.float64).view(1, 3, 1, 1).requires_grad_()
    hooks.batch_start(model, 1)  # step 1: no probability update (interval 100)
    y = model(x)
    assert float(y.detach()) == 33.0
    (0.5 * y.pow(2).sum()).backward()
    hooks.before_optimizer_step(model, 1)
    clear_momentum(opt, model, hooks.momentum_masks(model))  # what the LightningModule does
    opt.step()
    hooks.after_optimizer_step(model, 1)
    want = STEP_CASES[(restore, momentum, pruned)]
    assert x.grad.flatten().tolist() == pytest.approx(want["grad_x"], abs=1e-12)
    assert conv.weight.detach().flatten().tolist() == pytest.approx(want["w"], abs=1e-12)
    buf = opt.state[conv.weight]["momentum_buffer"].flatten().tolist()
    assert buf == pytest.approx(want["momentum"], abs=1e-12)
    assert "forward" not in vars(conv)  # the forward mask is gone after the step


def test_forward_mask_gradients_equal_autograd_on_both_weights():
    # conv(x, W·m) forward; ∂/∂x as conv(x, W); ∂/∂W as ∂/∂(W·m): checked on a strided, padded,
    # dilated conv with a bias against autograd on the two plain convs.
    from prunebench.surgery.forward_masks import clear_forward_mask, set_forward_mask

    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=2, dilation=2).double()
    mask = (torch.rand(4, 3, 3, 3) < 0.5).double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    set_forward_mask(conv, mask)
    y = conv(x)
    y.backward(dy)
    gx, gw, gb = x.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone()
    clear_forward_mask(conv)
    w = conv.weight.detach()
    wm = (w * mask).requires_grad_()
    ref = F.conv2d(x.detach(), wm, conv.bias.detach(), 2, 2, 2)
    torch.testing.assert_close(y, ref)
    ref.backward(dy)
    x2 = x.detach().requires_grad_()
    F.conv2d(x2, w, None, 2, 2, 2).backward(dy)
    torch.testing.assert_close(gx, x2.grad)
    torch.testing.assert_close(gw, wm.grad)
    torch.testing.assert_close(gb, dy.sum((0, 2, 3)))
    x3 = x.detach().requires_grad_()  # through W·m the input gradient differs
    F.conv2d(x3, w * mask, None, 2, 2, 2).backward(dy)
    assert not torch.allclose(gx, x3.grad)


@pytest.mark.parametrize(
    ("conv", "shape", "kept", "positions"),
    [
        (nn.Conv2d(3, 4, 3, padding=1, bias=True), (2, 3, 5, 5), 10, 25),
        (nn.Conv2d(3, 4, (3, 2), stride=2, padding=(1, 0), dilation=(1, 2)), (2, 3, 7, 8), 7, 12),
        (nn.Conv3d(2, 3, 3, padding=1, bias=False), (2, 2, 4, 4, 4), 20, 64),
    ],
)
def test_column_conv_equals_masked_conv_and_counts_kept_columns(conv, shape, kept, positions):
    torch.manual_seed(0)
    conv = conv.double()
    keep = torch.zeros(conv.weight[0].numel(), dtype=torch.bool)
    keep[torch.randperm(len(keep))[:kept]] = True
    keep = keep.view(conv.weight.shape[1:])
    x = torch.randn(*shape, dtype=torch.double)
    masked = copy.deepcopy(conv)
    masked.weight.data *= keep
    sparse = ColumnConv(conv, keep)
    torch.testing.assert_close(sparse(x), masked(x))
    assert sparse.weight.shape == (conv.out_channels, kept)
    # MACs: C_out × kept columns × output positions, as the shared counter counts it.
    assert count_macs(sparse, x[:1]).total == conv.out_channels * kept * positions


class Tiny(nn.Module):
    """a: Conv(2→3, 3×3) → BN → ReLU → b: Conv(3→2, 3×3), on 4×4 inputs (padding 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.b = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        return self.b(torch.relu(self.bn(self.a(x))))


def test_column_plan_macs_by_hand_emptied_channel_leaves_its_producer():
    torch.manual_seed(0)
    m, x = Tiny().eval(), torch.zeros(1, 2, 4, 4)
    m.bn.running_mean.uniform_(-1, 1)
    ctx = CompressContext.build(m, x, ["a"], [], 0.5)
    keep = torch.ones(3, 3, 3, dtype=torch.bool)
    keep[1] = False  # channel 1: every column gone → a's filter 1 goes too
    keep[0, 0] = False  # 3 columns of channel 0
    plan = Plan({"b": PlanEntry.from_column_mask(keep)})
    assert Plan.from_dict(plan.to_dict()).to_dict() == plan.to_dict()  # JSON round trip
    # b: 2 filters × 15 columns × 16 positions = 480; a: 2 filters × 2 × 9 × 16 = 576.
    assert ctx.mac_model.plan_macs(plan) == 480 + 576
    slimmed = slim(m, plan, x, ctx.structure).eval()
    assert slimmed.a.weight.shape[0] == 2 and isinstance(slimmed.b, ColumnConv)
    assert slimmed.b.weight.shape == (2, 15) and slimmed.b.in_channels == 2
    assert count_macs(slimmed, x).total == 480 + 576
    masked = apply_masks(copy.deepcopy(m), plan, ctx.structure).eval()
    xs = torch.randn(4, 2, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(slimmed(xs), masked(xs))


def _fake_train(model: nn.Module, steps: int):
    """ctx.train stand-in: ``steps`` SGD steps on random data through the hooks."""

    def train(epochs, hooks=None, recipe="finetune"):
        g = torch.Generator().manual_seed(0)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        model.train()
        for step in range(steps):
            x = torch.randn(8, 3, 32, 32, generator=g)
            y = torch.randint(0, 10, (8,), generator=g)
            hooks.batch_start(model, step)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            hooks.before_optimizer_step(model, step)
            opt.step()
            hooks.after_optimizer_step(model, step)
        model.eval()

    return train


@pytest.mark.parametrize("allocation", ["uniform", "paper"])
def test_shared_invariants_on_resnet20(allocation):
    from tests.test_slim import X, _trained_like

    base = _trained_like(20)
    roots = [n for n, _ in base.named_modules() if n.startswith("layer") and n.endswith(".conv1")]
    plans, contexts = [], []
    for _ in range(2):
        model = copy.deepcopy(base)
        ctx = CompressContext.build(model, X, roots, ["conv1", "fc"], 0.5, seed=3)
        ctx.train = _fake_train(model, steps=12)
        method = SPP(A=0.2, allocation=allocation)
        plans.append(method.compress(ctx))
        contexts.append(ctx)
    assert plans[0].to_dict() == plans[1].to_dict()  # same seed → same plan
    plan, ctx = plans[0], contexts[0]
    notes = method.notes()
    assert notes["columns_pruned_in_training"] > 0  # A = 0.2: some reach p = 1 in 12 steps
    assert all(e.kind == "column" for e in plan.entries.values()) and "conv1" not in plan.entries
    achieved = ctx.mac_model.plan_reduction(plan)
    assert abs(achieved - 0.5) <= (0.01 if allocation == "uniform" else 0.02)
    slimmed = slim(ctx.model, plan, X, ctx.structure).eval()
    assert count_macs(slimmed, X).total == ctx.mac_model.plan_macs(plan)  # realised = analytic
    masked = apply_masks(copy.deepcopy(ctx.model), plan, ctx.structure).eval()
    xs = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(slimmed(xs), masked(xs), rtol=1e-4, atol=1e-4)
    for name in ("conv1", "fc"):  # protected: trained, never pruned
        torch.testing.assert_close(
            slimmed.get_submodule(name).weight, ctx.model.get_submodule(name).weight
        )


def test_conv3d_stack_column_plan_slims_exactly():
    torch.manual_seed(0)
    model = conv3d_stack()
    x = torch.zeros(1, 2, 4, 6, 6)
    ctx = CompressContext.build(model, x, ["3"], ["0", "6"], 0.3)
    plan = SPP().compress(ctx)  # no training: the budget-end decision alone
    assert set(plan.entries) == {"3"} and plan.entries["3"].shape == [8, 3, 3, 3]
    assert abs(ctx.mac_model.plan_reduction(plan) - 0.3) <= 0.01
    slimmed = slim(model, plan, x, ctx.structure).eval()
    assert isinstance(slimmed[3], ColumnConv)
    assert count_macs(slimmed, x).total == ctx.mac_model.plan_macs(plan)
    masked = apply_masks(copy.deepcopy(model), plan, ctx.structure).eval()
    xs = torch.randn(2, 2, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(slimmed(xs), masked(xs), rtol=1e-4, atol=1e-5)
