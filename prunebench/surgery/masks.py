"""Structured masks as ``torch.nn.utils.parametrize`` parametrizations.

A filter mask zeroes an output channel on every layer that produces it (conv/linear weight rows
and bias, BN weight and bias), so the masked model computes exactly what the slimmed model does:
the channel is 0 after BN and contributes nothing downstream. A kernel mask zeroes ``W[n, c]``
slices of one conv; a column mask zeroes ``W[:, c, i, j…]`` (one input position across every
filter, see ``prunebench.surgery.columns``). A low-rank projection replaces a conv weight by its rank-r
approximation. Which filters a plan removes is decided by ``prunebench.surgery.resolve``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunebench.plan import Plan
from prunebench.surgery.lowrank import as_matrix, from_matrix, svd
from prunebench.surgery.resolve import resolve


class ChannelMask(nn.Module):
    """Multiply a parameter by a 0/1 mask along dimension 0."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.float())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        shape = [-1] + [1] * (weight.dim() - 1)
        return weight * self.mask.to(weight.dtype).view(shape)


class KernelMask(nn.Module):
    """Multiply a conv weight (C_out, C_in, k…) by a 0/1 (C_out, C_in) kernel mask."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.float())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        shape = list(self.mask.shape) + [1] * (weight.dim() - 2)
        return weight * self.mask.to(weight.dtype).view(shape)


class ColumnMask(nn.Module):
    """Multiply a conv weight (C_out, C_in, k…) by a 0/1 (C_in, k…) column mask."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.float())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask.to(weight.dtype).unsqueeze(0)


class LowRankProjection(nn.Module):
    """Replace a conv weight by its rank-``rank`` approximation (the function the factorised
    two-conv form computes)."""

    def __init__(self, rank: int, scheme: str) -> None:
        super().__init__()
        self.rank, self.scheme = rank, scheme

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # in full precision under mixed-precision training: an SVD and its product in bf16
        # would not be the rank-r projection
        # (a half-precision weight is lifted to float32; float64 stays float64)
        with torch.autocast(weight.device.type, enabled=False):
            full = weight if weight.dtype in (torch.float32, torch.float64) else weight.float()
            m = as_matrix(full, self.scheme, weight.dim() - 2)
            u, s, vh = svd(m)
            r = self.rank
            low = from_matrix((u[:, :r] * s[:r]) @ vh[:r], weight.shape, self.scheme)
            return low.to(weight.dtype)


def register_kernel_mask(module: nn.Module, mask: torch.Tensor) -> None:
    """Mask ``module.weight``'s kernels (no-op when every kernel is kept)."""
    if not bool(mask.all()):
        parametrize.register_parametrization(module, "weight", KernelMask(mask))


def apply_masks(model: nn.Module, plan: Plan, structure) -> nn.Module:
    """Mask ``model`` in place for ``plan`` (replacing earlier masks, baked in) and return it."""
    remove_masks(model, bake=True)
    res = resolve(plan, structure)
    for name, mask in res.kernels.items():
        register_kernel_mask(model.get_submodule(name), mask)
    for name, mask in res.columns.items():
        if not bool(mask.all()):
            parametrize.register_parametrization(
                model.get_submodule(name), "weight", ColumnMask(mask)
            )
    for name, (scheme, rank) in res.lowrank.items():
        parametrize.register_parametrization(
            model.get_submodule(name), "weight", LowRankProjection(rank, scheme)
        )
    for root, keep in res.filters.items():
        g = structure.groups[root]
        gone = torch.ones(g.size, dtype=torch.bool)
        gone[keep] = False
        for name in g.out_members:
            module = model.get_submodule(name)
            params = [p for p in ("weight", "bias") if getattr(module, p, None) is not None]
            n = getattr(module, params[0]).shape[0] if params else 0
            index = g.writer_index(name, n)  # the group's channels among the layer's outputs
            if index is None:
                continue
            mask = torch.ones(n)
            mask[torch.tensor(index)[gone]] = 0.0
            for pname in params:
                parametrize.register_parametrization(module, pname, ChannelMask(mask))
    return model


def remove_masks(model: nn.Module, bake: bool = True) -> nn.Module:
    """Remove every mask; with ``bake`` the masked values are written into the parameters.

    Safe on a deep copy: torch gives each parametrized module a class of its own, which a deep
    copy shares with the original, and removing a parametrization edits that class. Each module
    gets a private copy of it first, so the original keeps working.
    """
    for module in model.modules():
        if parametrize.is_parametrized(module):
            cls = module.__class__
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
            for pname in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, pname, leave_parametrized=bake)
    return model
