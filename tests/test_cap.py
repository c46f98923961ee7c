"""CaP: compensation, reconstruction loss, greedy ranking and the folded, slimmed model."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from methods.cap import CaP
from methods.cap_compensation import (
    InputStats,
    collect_input_stats,
    compensate,
    fold_compensation,
    greedy_rank,
    patch_vectors,
    reconstruction_loss,
    restore,
)
from prunebench.method import CompressContext
from prunebench.plan import Plan, PlanEntry
from prunebench.surgery.masks import apply_masks
from prunebench.surgery.slim import slim
from tests.test_slim import _trained_like


def _stats(x: torch.Tensor) -> InputStats:
    x = x.double()
    return InputStats(len(x), x.sum(0), x.T @ x)


def _correlated(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    return torch.randn(n, dim, generator=g, dtype=torch.float64) @ mix + 0.5


def test_compensation_equals_least_squares_on_the_data():
    x, w = _correlated(500, 6), torch.randn(3, 6, dtype=torch.float64)
    keep = torch.tensor([True, False, True, True, False, True])
    w_new, delta_b = compensate(w, _stats(x), keep)
    # Regress the dense outputs on the kept inputs, with an intercept: the same problem.
    design = torch.cat([x[:, keep], torch.ones(len(x), 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(design, x @ w.T).solution  # (|S| + 1, C_out)
    torch.testing.assert_close(w_new, sol[:-1].T, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(delta_b, sol[-1], rtol=1e-8, atol=1e-10)  # b' − b


def test_reconstruction_loss_is_the_measured_output_mse():
    x, w = _correlated(400, 8, seed=1), torch.randn(4, 8, dtype=torch.float64)
    keep = torch.tensor([True, True, False, True, False, False, True, True])
    stats = _stats(x)
    w_new, delta_b = compensate(w, stats, keep)
    err = x @ w.T - (x[:, keep] @ w_new.T + delta_b)
    mse = float((err**2).sum(1).mean())
    assert reconstruction_loss(w, stats, keep) == pytest.approx(mse, rel=1e-9)
    assert abs(float(err.mean())) < 1e-10  # b' preserves the output mean
    # Keeping everything costs nothing and compensation is the identity.
    everything = torch.ones(8, dtype=torch.bool)
    assert reconstruction_loss(w, stats, everything) == pytest.approx(0.0, abs=1e-8)
    same, zero = compensate(w, stats, everything, variance_rescale=True)
    assert torch.equal(same, w) and torch.equal(zero, torch.zeros(4, dtype=torch.float64))


def test_variance_rescale_keeps_each_output_variance():
    x, w = _correlated(300, 5, seed=2), torch.randn(2, 5, dtype=torch.float64)
    keep = torch.tensor([True, False, True, False, True])
    w_new, delta_b = compensate(w, _stats(x), keep, variance_rescale=True)
    out_old, out_new = x @ w.T, x[:, keep] @ w_new.T + delta_b
    torch.testing.assert_close(out_new.var(0), out_old.var(0))
    torch.testing.assert_close(out_new.mean(0), out_old.mean(0))


def test_greedy_ranks_a_duplicated_channel_last_and_dead_channels_after_it():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(600, 4, generator=g, dtype=torch.float64)
    # channels: 0..3 independent, 4 = copy of channel 1, 5 = dead (constant 0.7)
    x = torch.cat([base, base[:, 1:2], torch.full((600, 1), 0.7, dtype=torch.float64)], 1)
    w = torch.ones(2, 6, dtype=torch.float64)
    order = greedy_rank(w, _stats(x), ks=1)
    assert sorted(order) == list(range(6))
    assert order[-1] == 5  # dead: pruned first
    assert set(order[-2:-1]) <= {1, 4} and set(order[:4]) >= {0, 2, 3}  # one twin goes next
    # Pruning the dead channel and the twin costs nothing after compensation.
    keep = torch.ones(6, dtype=torch.bool)
    keep[order[-2:]] = False
    assert reconstruction_loss(w, _stats(x), keep) == pytest.approx(0.0, abs=1e-9)


def test_greedy_order_is_optimal_for_the_first_choice_with_kernels():
    """ks > 1: the first pick is the channel whose block alone explains the most (brute force)."""
    x, w = _correlated(800, 12, seed=4), torch.randn(3, 12, dtype=torch.float64)
    stats = _stats(x)
    order = greedy_rank(w, stats, ks=3)
    losses = []
    for c in range(4):
        keep = torch.zeros(12, dtype=torch.bool)
        keep[3 * c : 3 * c + 3] = True
        losses.append(reconstruction_loss(w, stats, keep))
    assert order[0] == min(range(4), key=losses.__getitem__)


def test_statistics_hooks_see_unfolded_inputs_and_are_removed():
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    model = nn.Sequential(nn.ReLU(), conv)
    x = torch.randn(4, 2, 5, 5)
    stats = collect_input_stats(model, ["1"], [(x, None)])
    p = patch_vectors(conv, x.relu()).double()
    assert stats["1"].count == 4 * 25
    torch.testing.assert_close(stats["1"].outer, p.T @ p)
    assert not conv._forward_pre_hooks  # hooks removed


@pytest.mark.parametrize("bias", [True, False])
def test_folded_layer_computes_the_compensated_map(bias):
    torch.manual_seed(5)
    conv = nn.Conv2d(4, 3, 3, padding=1, bias=bias).double()
    model = nn.Sequential(nn.ReLU(), conv)
    x = torch.randn(8, 4, 6, 6, dtype=torch.float64)
    stats = collect_input_stats(model, ["1"], [(x,)])
    keep = torch.tensor([True, False, True, True])
    w = conv.weight.detach().reshape(3, -1).clone()
    b = conv.bias.detach().clone() if bias else torch.zeros(3, dtype=torch.float64)
    w_new, delta_b = compensate(w, stats["1"], keep.repeat_interleave(9))
    saved = fold_compensation(model, "1", keep, w_new, delta_b, bn_after={})
    p = patch_vectors(conv, x.relu())
    want = (p[:, keep.repeat_interleave(9)] @ w_new.T + b + delta_b).reshape(8, 36, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(x).flatten(2).transpose(1, 2), want)
        assert not conv.weight[:, ~keep].any()  # pruned inputs read nothing
        restore(model, saved)
        torch.testing.assert_close(conv.weight.reshape(3, -1), w)


def _cap_context(model, target=0.4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 32, 32, generator=g)
    y = model(x).argmax(1)  # labels the dense model gets right: accuracy falls as we prune
    data = DataLoader(TensorDataset(x, y), batch_size=32)

    def evaluate(m):
        with torch.no_grad():
            return float((m.eval()(x).argmax(1) == y).float().mean())

    roots = [n for n, _ in model.named_modules() if n.endswith(".conv1") and n.startswith("layer")]
    ctx = CompressContext.build(
        model,
        x[:1],
        roots,
        ["conv1", "fc"],
        target,
        calib_loader=lambda fraction: data,
        evaluate=evaluate,
    )
    return ctx, x


@pytest.fixture(scope="module")
def cap_run():
    """One CaP run on a ResNet-20 with random BN statistics (shared by the tests below)."""
    model = _trained_like(20)
    ctx, x = _cap_context(model)
    plan = CaP(search_steps=3, target_iters=3).compress(ctx)
    return model, ctx, plan, x


def test_cap_hits_the_target_and_the_slim_model_carries_the_compensation(cap_run):
    model, ctx, plan, x = cap_run
    dense = _trained_like(20)
    assert abs(ctx.mac_model.plan_reduction(plan) - 0.4) <= 0.01
    assert not any(m._forward_pre_hooks for m in model.modules())
    masked = apply_masks(copy.deepcopy(model), plan, ctx.structure).eval()
    slimmed = slim(model, plan, x[:1], ctx.structure).eval()
    with torch.no_grad():
        torch.testing.assert_close(slimmed(x), masked(x), rtol=1e-4, atol=1e-4)
    # compensation changed the consumers, and only them: protected layers are untouched
    assert not torch.equal(model.layer1[0].conv2.weight, dense.layer1[0].conv2.weight)
    for name in ("conv1.weight", "fc.weight", "fc.bias", "bn1.running_mean"):
        assert torch.equal(model.state_dict()[name], dense.state_dict()[name])


def test_compensation_beats_plain_pruning_of_the_same_channels(cap_run):
    model, ctx, plan, x = cap_run
    plain = apply_masks(_trained_like(20), plan, ctx.structure).eval()
    comp = slim(model, plan, x[:1], ctx.structure).eval()
    with torch.no_grad():
        ref = _trained_like(20).eval()(x)
        assert ((comp(x) - ref) ** 2).mean() < ((plain(x) - ref) ** 2).mean()


def test_same_inputs_same_plan_and_floor_mode_needs_no_target(cap_run, capsys):
    ctx, _ = _cap_context(_trained_like(20))
    assert CaP(search_steps=3, target_iters=3).compress(ctx).to_dict() == cap_run[2].to_dict()
    # one progress line a search. Dense validation accuracy is 1.0, so acc_end bisects [0, 1];
    # every search here prunes past the target, so the floor rises: 0.5, 0.75, 0.875; none
    # lands within 0.01 and the top-up line follows
    out = capsys.readouterr().out.splitlines()
    lines = [ln for ln in out if ln.startswith("CaP: search")]
    assert [ln.split(" · ")[:2] for ln in lines] == [
        [f"CaP: search {k}/3", f"acc_end {a}"]
        for k, a in ((1, "0.5000"), (2, "0.7500"), (3, "0.8750"))
    ]
    assert all(float(ln.split("MACs reduction ")[1].split()[0]) > 0.41 for ln in lines)
    assert all("(target 0.4 ± 0.01)" in ln for ln in lines)
    assert out[-1].startswith("CaP: no accuracy floor reached the target within 0.01 in 3 searches")
    ctx, _ = _cap_context(_trained_like(20))
    method = CaP(mode="floor", acc_drop=0.0, search_steps=3)
    assert method.uses_target is False
    method.compress(ctx)
    # acc_drop 0: every layer's floor is the dense validation accuracy, which the result keeps
    assert ctx.evaluate(ctx.model) >= ctx.evaluate(_trained_like(20))


def test_pipeline_records_caps_data_use_and_controls_run_without_finetune(cfg_factory):
    from prunebench.running.pipeline import Pipeline

    rec = Pipeline(cfg_factory("method=cap", "target.macs_reduction=0.3")).run()
    used = rec["train_samples"]
    assert rec["finetune_epochs"] == 0 and "finetune" not in rec["stage_seconds"]
    assert used["compress"] == {"seen": 51, "distinct": 51}  # 20 % of the 256-sample split, once
    assert used["compress_val_passes"] > 0 and rec["stage_seconds"]["compress"] > 0
    assert abs(rec["achieved_macs_reduction"] - 0.3) <= 0.01
    ctrl = Pipeline(cfg_factory("method=magnitude", "budget.finetune_epochs=0")).run()
    assert ctrl["finetune_epochs"] == 0 and ctrl["train_samples"]["finetune"]["seen"] == 0


def test_psd_solve_paths_agree(monkeypatch):
    from methods import cap_compensation as compensation

    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, dtype=torch.float64, generator=g)
    a, b = x.T @ x, torch.randn(6, 3, dtype=torch.float64, generator=g)
    chol = compensation._solve_psd(a, b, 0.0)  # well-conditioned: the Cholesky path
    torch.testing.assert_close(chol, torch.linalg.solve(a, b))
    singular = a.clone()
    singular[:, 0] = singular[0, :] = 0.0  # a dead channel: pseudo-inverse path
    ref = torch.linalg.pinv(singular, hermitian=True) @ b
    torch.testing.assert_close(compensation._solve_psd(singular, b, 0.0), ref)

    real_pinv = torch.linalg.pinv

    def eigh_fails(m, *args, hermitian=False, **kw):
        if hermitian:
            raise torch.linalg.LinAlgError("linalg.eigh: failed to converge")
        return real_pinv(m, *args, **kw)

    monkeypatch.setattr(torch.linalg, "pinv", eigh_fails)
    torch.testing.assert_close(compensation._solve_psd(singular, b, 0.0), ref)


def test_each_refit_is_solved_once_and_reused_bit_for_bit(monkeypatch):
    import methods.cap as cap_module

    calls = []
    real = cap_module.compensate
    monkeypatch.setattr(cap_module, "compensate", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = _trained_like(20)
    ctx, _ = _cap_context(model)
    plan = CaP(mode="floor", search_steps=3).compress(ctx)  # one search: commits reuse trials
    cached = len(calls)
    monkeypatch.setattr(cap_module, "REFIT_CACHE_BYTES", 0)  # nothing kept: every refit solved
    calls.clear()
    fresh = _trained_like(20)
    ctx, _ = _cap_context(fresh)
    assert CaP(mode="floor", search_steps=3).compress(ctx).to_dict() == plan.to_dict()
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert cached < len(calls)


def test_an_unreachable_target_is_refused_before_any_statistics():
    ctx, _ = _cap_context(_trained_like(20), target=0.95)
    groups = ctx.structure.groups
    # the most the search may prune: int(0.9 · C) channels of every group (16 → 2 kept, …)
    most = Plan(
        {
            r: PlanEntry("filter", g.size, torch.arange(g.size - int(0.9 * g.size)))
            for r, g in groups.items()
        }
    )
    reach = ctx.mac_model.plan_reduction(most)
    assert CaP().refusal(ctx) == (
        f"target.macs_reduction=0.95 is beyond reach: pruning max_sparsity=0.9 of each of the "
        f"{len(groups)} group(s) CaP compensates removes {reach:.3f} of the MACs"
    )
    assert len(groups) == 9 and 0.5 < reach < 0.95
    assert CaP(mode="floor").refusal(ctx) is None  # no target to reach
    ctx, _ = _cap_context(_trained_like(20), target=0.4)
    assert CaP().refusal(ctx) is None


def test_top_up_takes_the_channel_by_channel_result_in_a_few_evaluations():
    from methods.cap import top_up

    sizes, most = [16, 32, 64, 3072], [14, 28, 57, 2764]
    weight = [5.0, 3.0, 2.0, 0.01]  # MACs removed per channel, by layer
    calls = []

    def reduction(pruned):
        calls.append(1)
        return sum(w * n for w, n in zip(weight, pruned, strict=True)) / 400.0

    for start, threshold in (([0, 0, 0, 0], 0.5), ([3, 1, 0, 100], 0.6), ([0, 0, 0, 0], 0.0)):
        pruned = list(start)  # the loop it replaces: one channel at a time, least-pruned first
        while reduction(pruned) < threshold:
            free = [i for i in range(4) if pruned[i] < most[i]]
            i = min(free, key=lambda j: (pruned[j] / sizes[j], j))
            pruned[i] += 1
        calls.clear()
        assert top_up(start, most, sizes, reduction, threshold) == pruned
        assert len(calls) <= 13  # bisection over ~2,900 steps, not one evaluation per step
    assert top_up([0, 0, 0, 0], most, sizes, reduction, 9.9) == most  # out of reach: the most


def test_scalar_blocks_invert_as_the_general_pseudo_inverse(monkeypatch):
    from methods import cap_compensation as compensation

    t = torch.tensor([4.0, 1e-20, -2.0, 0.0, 0.3], dtype=torch.float64).view(5, 1, 1)
    general = torch.linalg.pinv(t, atol=1e-12, rtol=0.0, hermitian=True)
    assert torch.equal(compensation._block_pinv(t, 1e-12), general)
    x, w = _correlated(700, 24, seed=5), torch.randn(4, 24, dtype=torch.float64)
    fast = greedy_rank(w, _stats(x), ks=1)  # a linear consumer: one column per channel
    monkeypatch.setattr(
        compensation,
        "_block_pinv",
        lambda t, tol: torch.linalg.pinv(t, atol=tol, rtol=0.0, hermitian=True),
    )
    assert greedy_rank(w, _stats(x), ks=1) == fast
