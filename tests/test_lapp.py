"""LAPP: the bypass's analytic cost, the soft-MACs term equal to the shared counter at hard masks,
the thresholds' gradient, masked ≡ slimmed with bypasses, the projection, and a pipeline run."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from methods.lapp import LAPP, SoftMacs
from prunebench.errors import ConfigError
from prunebench.method import CompressContext
from prunebench.plan import Plan, PlanEntry
from prunebench.reporting.records import checkpoint_file
from prunebench.running.checkpoint import load
from prunebench.running.module import lr_groups, make_optimizer, warmup_then_steps
from prunebench.running.pipeline import Pipeline
from prunebench.surgery.bypass import Bypassed, add_bypasses
from prunebench.surgery.measure import count_macs, count_params
from prunebench.surgery.slim import slim
from prunebench.task import OptimSpec
from tasks.classification.resnet_cifar import CifarResNet

X = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def toy() -> nn.Sequential:
    """conv0 3→4 (protected), conv1 4→8 (prunable), conv2 8→4, all 3×3 pad 1 on 8×8; fc 4→10."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 10),
    ).eval()


def toy_ctx(kind: str, target: float = 0.3, **options) -> tuple[CompressContext, LAPP]:
    model = toy()
    method = LAPP(bypass=kind, **options)
    prunable = method.prepare(model, ["3"])
    return CompressContext.build(model, X, prunable, ["0", "11"], macs_reduction=target), method


# conv0 4·3·9·64 = 6,912; conv1 8·4·9·64 = 18,432; conv2 4·8·9·64 = 18,432; fc 40.
# conv1x1 bypass 8·4·64 = 2,048 MACs, 32 params; dwconv3x3: 4·9·64 + 8·4·64 = 4,352, 36 + 32.
@pytest.mark.parametrize(
    ("kind", "macs", "params"), [("conv1x1", 2048, 32), ("dwconv3x3", 4352, 68)]
)
def test_bypass_adds_exactly_its_analytic_cost_before_and_after_slimming(kind, macs, params):
    plain = toy()
    assert count_macs(plain, X).total == 6912 + 18432 + 18432 + 40
    ctx, _ = toy_ctx(kind)
    assert isinstance(ctx.model.get_submodule("3"), Bypassed)
    assert count_macs(ctx.model, X).total - count_macs(plain, X).total == macs
    assert count_params(ctx.model) - count_params(plain) == params
    keep = [1, 4, 6]  # 3 of 8 filters: the 1×1 (or point-wise) part shrinks to 3·4·64 = 768
    plan = Plan({"3.conv": PlanEntry("filter", 8, keep)})
    slimmed = count_macs(slim(ctx.model, plan, X, ctx.structure), X).total
    ctx0, _ = toy_ctx("none")
    slimmed0 = count_macs(
        slim(ctx0.model, Plan({"3": PlanEntry("filter", 8, keep)}), X, ctx0.structure), X
    ).total
    assert slimmed - slimmed0 == macs - 2048 + 768  # dw part (2,304) is not pruned
    assert ctx.mac_model.plan_macs(plan) == slimmed


def _resnet20(kind: str, target: float = 0.5):
    torch.manual_seed(1)
    model = CifarResNet(20, 10, "A", None).eval()
    x = torch.randn(2, 3, 32, 32)
    method = LAPP(bypass=kind)
    prunable = [
        n for n, _ in model.named_modules() if n.startswith("layer") and n.endswith(".conv1")
    ]
    prunable = method.prepare(model, prunable)
    for m in model.modules():  # spread the BN scores so thresholds cut somewhere
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape) + 0.05
            m.running_mean.normal_(0, 0.1)
    ctx = CompressContext.build(model, x[:1], prunable, ["conv1", "fc"], macs_reduction=target)
    return ctx, method, x


@pytest.mark.parametrize("kind", ["conv1x1", "dwconv3x3", "none"])
def test_macs_term_at_hard_masks_equals_the_counter_of_the_slimmed_model(kind):
    ctx, method, x = _resnet20(kind)
    hooks = method.hooks(ctx)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        for t in hooks.t.values():
            t.data = torch.rand((), generator=g) * 0.8
        plan = hooks.plan_at(ctx.model)
        assert any(len(e.keep) < e.size for e in plan.entries.values())
        realised = count_macs(slim(ctx.model, plan, x[:1], ctx.structure), x[:1]).total
        assert float(hooks.macs(ctx.model).detach()) == realised == ctx.mac_model.plan_macs(plan)
        widths = {r: torch.tensor(float(len(e.keep))) for r, e in plan.entries.items()}
        assert float(SoftMacs(ctx.mac_model)(widths)) == realised


def test_threshold_gradient_is_nonzero_and_raising_it_lowers_macs():
    ctx, method = toy_ctx("conv1x1", target=0.5, score_norm="max")
    bn = ctx.model.get_submodule("4")
    bn.weight.data = torch.tensor([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])  # s = γ / max γ
    hooks = method.hooks(ctx)
    (t,) = hooks.t.values()
    t.data = torch.tensor(0.5)
    # At t = 0.5 the hard mask keeps s > 0.5: 5 filters. Soft MACs forward = hard MACs:
    # 6,912 + 40 + (18,432 + 2,048 + 18,432)·5/8 = 31,272.
    assert float(hooks.macs(ctx.model).detach()) == 6912 + 40 + (18432 + 2048 + 18432) * 5 / 8
    hooks.macs(ctx.model).backward()
    assert t.grad is not None and float(t.grad) < 0  # raising t lowers MACs
    t.grad = None
    for constraint in ("squared", "hinge"):  # MACs 31,272 > target 0.5·43,816: both active
        method.constraint = constraint
        loss = hooks.extra_loss(ctx.model, 0)
        assert float(loss.detach()) == pytest.approx(method.lam * (31272 / 21908 - 1) ** 2)
        loss.backward()
        assert float(t.grad) < 0  # gradient descent raises t
        t.grad = None


def test_rank_scores_keep_the_top_one_minus_t_of_each_layer():
    ctx, method = toy_ctx("conv1x1", target=0.5)  # score_norm="rank", the default
    bn = ctx.model.get_submodule("4")
    bn.weight.data = torch.tensor([0.3, -0.9, 0.8, 0.7, 0.1, 0.5, 0.4, 0.6])  # |γ| ranks
    hooks = method.hooks(ctx)
    (t,) = hooks.t.values()
    assert float(t.detach()) == 0.0  # the rank default: nothing pruned at the start
    s = hooks.scores(ctx.model, "3.conv")
    torch.testing.assert_close(s, torch.tensor([2, 8, 7, 6, 1, 4, 3, 5]) / 8.0)
    t.data = torch.tensor(0.4)  # s > 0.4 keeps ranks 4..8 of 8: the 5 largest |γ|
    assert hooks.plan_at(ctx.model).entries["3.conv"].keep == [1, 2, 3, 5, 7]
    # Soft MACs forward = hard MACs at 5 of 8 kept; the constraint's gradient raises t.
    assert float(hooks.macs(ctx.model).detach()) == 6912 + 40 + (18432 + 2048 + 18432) * 5 / 8
    hooks.extra_loss(ctx.model, 0).backward()
    assert float(t.grad) < 0


def test_bad_score_norm_names_the_choices():
    with pytest.raises(ConfigError, match=r"method.score_norm='z'.*'rank', 'max'"):
        LAPP(score_norm="z")


@pytest.mark.parametrize("kind", ["conv1x1", "dwconv3x3"])
def test_masked_equals_slimmed_with_bypasses(kind):
    ctx, method, x = _resnet20(kind)
    hooks = method.hooks(ctx)
    for t in hooks.t.values():
        t.data = torch.tensor(0.4)
    hooks.install(ctx.model)
    plan = hooks.freeze(ctx.model)  # the frozen masks now multiply the BN outputs
    with torch.no_grad():
        masked = ctx.model(x)
    hooks.remove()
    slim_model = slim(ctx.model, plan, x[:1], ctx.structure)
    with torch.no_grad():
        slimmed = slim_model(x)
    torch.testing.assert_close(masked, slimmed, atol=1e-5, rtol=1e-5)
    assert any(len(e.keep) < e.size for e in plan.entries.values())


def test_projection_lands_within_one_percent_and_is_recorded():
    ctx, method, _ = _resnet20("conv1x1", target=0.4)
    hooks = method.hooks(ctx)  # thresholds at 0 keep everything: reduction < 0 with bypasses
    for t in hooks.t.values():
        t.data = torch.tensor(0.0)
    hooks.freeze(ctx.model)
    n = hooks.notes
    assert n["projected"] and n["reduction_before_projection"] < 0
    assert 0.4 <= n["achieved_reduction"] <= 0.41
    assert hooks.reduction(hooks.plan) == pytest.approx(n["achieved_reduction"], abs=1e-6)


def test_pipeline_run_trains_thresholds_and_reloads(cfg_factory):
    rec = Pipeline(cfg_factory("method=lapp", "budget.latency.batch=0")).run()
    assert rec["status"] == "ok" and abs(rec["achieved_macs_reduction"] - 0.5) <= 0.01
    assert rec["macs"]["compressed"] == rec["macs"]["realised"]
    notes = rec["method_notes"]
    assert any(t != 0.0 for t in notes["thresholds"].values())  # the optimiser moved them
    assert notes["total_epochs"] == 1 and rec["finetune_epochs"] == 0
    loaded = load(checkpoint_file(rec))
    assert count_macs(loaded, torch.zeros(1, 3, 32, 32)).total == rec["macs"]["realised"]
    assert isinstance(loaded.get_submodule("layer1.0.conv1"), Bypassed)


def test_bypass_is_a_layer_replacement_that_keeps_the_function_at_zero_branch():
    model = toy()
    x = copy.deepcopy(X)
    before = model(x)
    add_bypasses(model, ["3"], "conv1x1")
    model.get_submodule("3.bypass").weight.data.zero_()
    torch.testing.assert_close(model(x), before)


def _two_branch(module: Bypassed, x: torch.Tensor) -> torch.Tensor:
    return module.conv(x) + module.bypass(x)


@pytest.mark.parametrize(
    ("kind", "conv"),
    [
        ("conv1x1", nn.Conv2d(4, 6, 3, padding=1, stride=2)),
        ("conv1x1", nn.Conv2d(4, 6, 3, padding=2, dilation=2, bias=False)),
        ("conv1x1", nn.Conv3d(4, 6, 3, padding=1, bias=False)),
        ("dwconv3x3", nn.Conv2d(4, 6, 3, padding=1, stride=2, bias=False)),
        ("dwconv3x3", nn.Conv2d(4, 6, 5, padding=2)),
    ],
)
def test_folded_training_forward_equals_the_two_branch_sum_with_the_same_gradients(kind, conv):
    torch.manual_seed(0)
    module = Bypassed(conv, kind).train()
    assert module._foldable()
    x = torch.randn(2, 4, *[7] * (conv.weight.dim() - 2))
    grads = []
    for forward in (module, lambda x: _two_branch(module, x)):
        module.zero_grad()
        out = forward(x)
        (out * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in module.parameters()]))
    (fused, g_fused), (plain, g_plain) = grads
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_fused, g_plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_folding_is_skipped_where_it_would_change_what_runs():
    dilated = Bypassed(nn.Conv2d(4, 6, 3, padding=2, dilation=2), "dwconv3x3").train()
    assert not dilated._foldable()  # the depth-wise branch reads other taps than the conv
    hooked = Bypassed(nn.Conv2d(4, 6, 3, padding=1), "conv1x1").train()
    seen = []
    hooked.bypass.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    hooked(torch.randn(1, 4, 5, 5))
    assert seen == [torch.Size([1, 6, 5, 5])]  # a hook on the branch still fires


def test_masks_folded_into_batch_norm_equal_multiplying_its_output():
    """LAPPHooks fold the straight-through mask into γ and β: output, every gradient (γ, β, the
    input, the thresholds) and the running statistics equal the output-multiplying hook's."""
    results = []
    for fold in (True, False):
        ctx, method, x = _resnet20("conv1x1")
        ctx.model.train()
        hooks = method.hooks(ctx)
        for i, t in enumerate(hooks.t.values()):
            t.data = torch.tensor(0.2 + 0.05 * i)
        if not fold:  # the reference: a subclass is not folded, so it gets the output hook
            for root in hooks.roots:
                bn = ctx.model.get_submodule(hooks.bn[root])
                bn.__class__ = type("BN", (nn.BatchNorm2d,), {})
        hooks.install(ctx.model)
        first = ctx.model.get_submodule(hooks.bn[hooks.roots[0]])
        assert ("forward" in vars(first)) == fold
        x = x.clone().requires_grad_(True)
        out = ctx.model(x)
        (out.square().sum() + hooks.extra_loss(ctx.model, 0)).backward()
        hooks.remove()
        bn = ctx.model.get_submodule(hooks.bn[hooks.roots[0]])
        results.append(
            (
                out.detach(),
                x.grad,
                [t.grad for t in hooks.t.values()],
                bn.weight.grad,
                bn.running_mean.clone(),
                int(bn.num_batches_tracked),
            )
        )
    folded, hooked = results
    for a, b in zip(folded, hooked, strict=True):
        if isinstance(a, list):
            for p, q in zip(a, b, strict=True):
                torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)
        elif isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        else:
            assert a == b == 1
    assert any(float(g) != 0.0 for g in folded[2])  # the thresholds got a gradient
    assert "forward" not in vars(ctx.model.get_submodule(hooks.bn[hooks.roots[0]]))


def test_a_bn_replaced_after_install_is_masked_again_at_the_next_batch():
    """Lightning's sync_batchnorm swaps every BN for a new SyncBatchNorm when DDP starts: the
    swapped module (a BN subclass here) must carry the mask too (through the output hook)."""
    ctx, method, x = _resnet20("none")
    hooks = method.hooks(ctx)
    for t in hooks.t.values():
        t.data = torch.tensor(0.5)
    hooks.install(ctx.model)
    plan = hooks.freeze(ctx.model)
    root = next(r for r, e in plan.entries.items() if len(e.keep) < e.size)
    parent, _, child = hooks.bn[root].rpartition(".")
    old = ctx.model.get_submodule(hooks.bn[root])
    new = type("SyncLike", (nn.BatchNorm2d,), {})(old.num_features)
    new.load_state_dict(old.state_dict())
    setattr(ctx.model.get_submodule(parent), child, new.eval())
    seen = []
    hooks.batch_start(ctx.model, 0)
    new.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        ctx.model(x)
    dropped = sorted(set(range(plan.entries[root].size)) - set(plan.entries[root].keep))
    assert seen[0][:, dropped].abs().max() == 0.0
    assert seen[0][:, plan.entries[root].keep].abs().max() > 0.0
    hooks.remove()
    assert len(new._forward_hooks) == 1 and "forward" not in vars(old)  # only the capture left


@pytest.mark.parametrize(("threshold_lr", "reaches"), [(None, True), (0.002, False)])
def test_thresholds_alone_reach_the_target_at_e_p(threshold_lr, reaches):
    """A smoke task with the ``cpu`` tier's pruning phase (E_p = 4 epochs of 39 steps, the first
    2 at 0.1 × lr, the recipe's SGD): ResNet-20 from scratch on random 8×8 images, batch 4. At the
    default ``threshold_lr`` the thresholds' own masks land within 1 % of −50 % at E_p, before any
    projection; at the first default, 0.002, they stop near −37 % (as every committed cpu run did:
    −38 %) and the projection does the rest."""
    torch.manual_seed(0)
    model = CifarResNet(20, 10, "A", None)
    method = LAPP() if threshold_lr is None else LAPP(threshold_lr=threshold_lr)
    prunable = [
        n for n, _ in model.named_modules() if n.startswith("layer") and n.endswith(".conv1")
    ]
    prunable = method.prepare(model, prunable)
    x, y = torch.randn(39 * 4, 3, 8, 8), torch.randint(0, 10, (39 * 4,))  # 8×8: fast
    ctx = CompressContext.build(
        model, x[:1], prunable, ["conv1", "fc"], 0.5, compress_epochs=4, baseline_epochs=14
    )
    hooks = method.hooks(ctx)
    recipe = OptimSpec(lr=0.1, warmup_epochs=method.warmup_epochs)
    opt = make_optimizer([*lr_groups(model, recipe.lr, None), *hooks.param_groups()], recipe)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_then_steps(2 * 39, 0.1, [], 0.1))
    hooks.install(model)
    model.train()
    for epoch in range(5):
        hooks.epoch_start(model, epoch)  # epoch 4 = E_p: the freeze
        if hooks.frozen is not None:
            break
        for b in range(39):
            batch = slice(4 * b, 4 * b + 4)
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss = loss + hooks.extra_loss(model, 39 * epoch + b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    hooks.remove()
    n = hooks.notes
    trace = [e["hard"] for e in n["reduction_per_epoch"]]
    assert len(trace) == 5 and trace[0] < 0 and trace[1] < trace[2] < trace[3]  # bypasses cost
    assert trace[4] == pytest.approx(n["reduction_before_projection"], abs=1e-4)
    if reaches:
        assert abs(n["reduction_before_projection"] - 0.5) <= 0.01
        assert not n["projected"] and n["projection_offset"] == 0.0
    else:
        assert 0.3 < n["reduction_before_projection"] < 0.45 and n["projected"]
    assert abs(n["achieved_reduction"] - 0.5) <= 0.01
