"""Physical removal: a plan becomes a smaller model whose tensors really shrink."""

from __future__ import annotations

import copy

import torch
from torch import nn

from prunebench.masks import remove_masks
from prunebench.plan import Plan
from prunebench.structure import build_dependency_graph, out_channel_group


def slim(model: nn.Module, plan: Plan, example_input: torch.Tensor) -> nn.Module:
    """Return a copy of ``model`` with the plan's pruned units removed (``model`` is untouched).

    Masks on the copy are baked in first, so a masked model slims to the same function.
    """
    slimmed = remove_masks(copy.deepcopy(model), bake=True)
    if not plan.entries:
        return slimmed
    dg = build_dependency_graph(slimmed, example_input)
    for root, entry in plan.entries.items():
        if entry.kind != "filter":
            raise NotImplementedError(f"slimming of {entry.kind!r} entries")
        if entry.pruned:
            out_channel_group(dg, slimmed.get_submodule(root), entry.pruned).prune()
    return slimmed
