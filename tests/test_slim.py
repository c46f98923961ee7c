"""Slimming is real and exact: masked ≡ slimmed outputs, MACs equal a model built at the slimmed
widths, tensors shrink, protected layers stay as they were, same seed → same plan."""

from __future__ import annotations

import copy

import pytest
import torch

from methods.magnitude import Magnitude
from methods.random import Random
from prunebench.method import CompressContext
from prunebench.surgery.masks import apply_masks
from prunebench.surgery.measure import count_macs, count_params
from prunebench.surgery.slim import slim
from tasks.classification.resnet_cifar import CifarResNet

X = torch.zeros(1, 3, 32, 32)


def _context(model, target: float, seed: int = 0) -> CompressContext:
    roots = [n for n, _ in model.named_modules() if n.endswith(".conv1") and n.startswith("layer")]
    return CompressContext.build(model, X, roots, ["conv1", "fc"], target, seed)


def _trained_like(depth: int, shortcut: str = "A") -> CifarResNet:
    """Random BN statistics and affine parameters, so zeroed channels are not trivially zero."""
    torch.manual_seed(0)
    m = CifarResNet(depth, shortcut=shortcut)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.3, 0.3)
    return m.eval()


@pytest.mark.parametrize(
    ("depth", "shortcut", "allocation"),
    [(20, "A", "uniform"), (56, "A", "global"), (20, "B", "global")],
)
def test_magnitude_half_macs_is_exact(depth, shortcut, allocation):
    model = _trained_like(depth, shortcut)
    ctx = _context(model, 0.5)
    plan = Magnitude(allocation).compress(ctx)
    slimmed = slim(model, plan, X, ctx.structure).eval()

    # Achieved reduction within 1 % of the target, and predicted == counted.
    macs_dense, macs_slim = count_macs(model, X).total, count_macs(slimmed, X).total
    assert abs((1 - macs_slim / macs_dense) - 0.5) <= 0.01
    assert ctx.mac_model.plan_macs(plan) == macs_slim

    # Slimmed MACs equal an unpruned model built directly at the slimmed widths.
    mids = [
        len(plan.entries[r].keep) if r in plan.entries else ctx.structure.groups[r].size
        for r in ctx.structure.groups
    ]
    direct = CifarResNet(depth, shortcut=shortcut, mid_widths=mids)
    assert count_macs(direct, X).total == macs_slim
    assert count_params(direct) == count_params(slimmed) < count_params(model)

    # Tensors really shrink.
    root = next(iter(plan.entries))
    assert slimmed.get_submodule(root).weight.shape[0] == len(plan.entries[root].keep)

    # Masked and slimmed models compute the same function.
    masked = apply_masks(copy.deepcopy(model), plan, ctx.structure).eval()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(masked(x), slimmed(x), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(model(x), slimmed(x), atol=1e-3)  # pruning did change something

    # Protected layers are untouched.
    for name in ("conv1", "fc"):
        torch.testing.assert_close(
            slimmed.get_submodule(name).weight, model.get_submodule(name).weight
        )


def test_same_seed_same_plan_and_different_seed_different_plan():
    model = _trained_like(20)
    plans = [Random("uniform").compress(_context(model, 0.4, seed)).to_dict() for seed in (3, 3, 4)]
    assert plans[0] == plans[1]
    assert plans[0] != plans[2]


def test_magnitude_keeps_largest_l1_filters():
    model = _trained_like(20)
    plan = Magnitude("uniform").compress(_context(model, 0.3))
    root, entry = next(iter(plan.entries.items()))
    l1 = model.get_submodule(root).weight.abs().sum((1, 2, 3))
    assert l1[entry.keep].min() >= l1[entry.pruned].max()
