"""The peer row of ``realised_speedup.py``: Torch-Pruning's own ``MagnitudePruner`` (L1
importance, one uniform ratio) at the same MACs target, the pruning tool users compare against.
Not part of the package; imported as ``_peer`` by the benchmark scripts."""

from __future__ import annotations

import copy

import torch
import torch_pruning as tp
from torch import nn

from prunebench.surgery.measure import count_macs


def tp_magnitude(model: nn.Module, x1: torch.Tensor, reduction: float) -> tuple[nn.Module, int]:
    """Torch-Pruning's ``MagnitudePruner`` (L1 importance, uniform ratio), its ratio bisected
    until the counted MACs reduction is within 0.5 % above ``reduction``."""
    dense_macs = count_macs(model, x1).total
    ignored = [m for n, m in model.named_modules() if n in ("conv1", "fc")]
    if hasattr(model, "layer1") and not hasattr(model, "maxpool"):  # CIFAR, option A: block convs
        ignored += [m for n, m in model.named_modules() if n.endswith(".conv2")]

    def pruned(ratio: float) -> nn.Module:
        m = copy.deepcopy(model)
        ign = [m.get_submodule(n) for n, mod in model.named_modules() if mod in ignored]
        pruner = tp.pruner.MagnitudePruner(
            m,
            x1,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=ratio,
            ignored_layers=ign,
        )
        pruner.step()
        return m.eval()

    lo, hi = 0.0, 0.95
    best = None
    for _ in range(10):
        mid = (lo + hi) / 2
        m = pruned(mid)
        r = 1 - count_macs(m, x1).total / dense_macs
        if r >= reduction:
            hi, best = mid, (m, count_macs(m, x1).total)
            if r - reduction <= 0.005:
                break
        else:
            lo = mid
    if best is None:
        raise RuntimeError(f"Torch-Pruning could not reach {reduction} with ratio ≤ 0.95")
    return best
