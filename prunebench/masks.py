"""Structured masks as ``torch.nn.utils.parametrize`` parametrizations.

A filter mask zeroes an output channel on every layer that produces it (conv/linear weight rows
and bias, BN weight and bias), so the masked model computes exactly what the slimmed model does:
the channel is 0 after BN and contributes nothing downstream.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunebench.plan import Plan
from prunebench.structure import Structure


class ChannelMask(nn.Module):
    """Multiply a parameter by a 0/1 mask along dimension 0."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.float())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        shape = [-1] + [1] * (weight.dim() - 1)
        return weight * self.mask.to(weight.dtype).view(shape)


def apply_masks(model: nn.Module, plan: Plan, structure: Structure) -> nn.Module:
    """Register masks for ``plan`` on ``model`` in place and return it."""
    for root, entry in plan.entries.items():
        mask = torch.zeros(entry.size)
        mask[entry.keep] = 1.0
        for name in structure.groups[root].out_members:
            module = model.get_submodule(name)
            for pname in ("weight", "bias"):
                if getattr(module, pname, None) is not None:
                    parametrize.register_parametrization(module, pname, ChannelMask(mask))
    return model


def remove_masks(model: nn.Module, bake: bool = True) -> nn.Module:
    """Remove every mask; with ``bake`` the masked values are written into the parameters."""
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for pname in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, pname, leave_parametrized=bake)
    return model
