"""Bypasses: a lightweight branch added in parallel to a conv, ``y = conv(x) + bypass(x)``.

A layer replacement (like the low-rank and column convs of ``prunebench.surgery.slim``): the conv at
``name`` becomes a :class:`Bypassed` module holding the conv at ``name.conv`` and the branch at
``name.bypass``. Kinds: ``conv1x1`` (a 1×1 conv C_in → C_out), ``dwconv3x3`` (a depth-wise 3×3
conv on C_in channels, then a 1×1 conv C_in → C_out: a depth-wise conv alone ties each output to
an input channel, so its outputs could not follow the conv's pruned filters) and ``none``. The branch has the conv's stride and the
padding that keeps the conv's output size, so the outputs add. Its weights are ordinary
parameters: the shared counter (``prunebench.surgery.measure``) counts its MACs and params, and the
dependency graph couples its input channels to the conv's inputs and its output channels to the
conv's outputs (a sum, as a residual is), so slimming a plan shrinks it with the conv
(``tests/test_lapp.py`` checks masked ≡ slimmed).

Speed: in a training forward the branch is folded into the conv's kernel and one conv runs,
``conv(x; W + pad(B))`` for a 1×1 branch (its weight at the kernel's centre tap, which reads the
same input pixel at every stride and dilation) and ``W + pad(P·D)`` for the depth-wise one (the
3×3 depth-wise kernel D times the 1×1 P, when the conv is undilated) — the structural
re-parameterisation of RepVGG (Ding et al., CVPR 2021). It is the same linear function, so the
outputs and every parameter's gradient are those of the two-branch sum up to float rounding
(``tests/test_lapp.py``); it removes most of the branch's cost (``benchmarks/method_overhead.py``).
Evaluation, the MACs counter and the tracer see the two branches, and a branch or conv carrying
hooks is never folded.
"""

from __future__ import annotations

import torch
from torch import nn

KINDS = ("none", "conv1x1", "dwconv3x3")


class Bypassed(nn.Module):
    """``conv(x) + bypass(x)``."""

    def __init__(self, conv: nn.Conv2d | nn.Conv3d, kind: str) -> None:
        super().__init__()
        self.conv, self.bypass = conv, make_bypass(conv, kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled() and self._foldable():
            return self.conv._conv_forward(x, self.conv.weight + self.folded(), self.conv.bias)
        return self.conv(x) + self.bypass(x)

    def _foldable(self) -> bool:
        k, d = self.conv.kernel_size, self.conv.dilation
        if any(size % 2 == 0 for size in k) or (self.kind == "dwconv3x3" and set(d) != {1}):
            return False
        if self.kind == "dwconv3x3" and min(k) < 3:
            return False
        parts = [self.conv, *self.bypass.modules()]
        return not any(m._forward_hooks or m._forward_pre_hooks for m in parts)

    def folded(self) -> torch.Tensor:
        """The branch as a kernel of the conv's size (differentiable in the branch's weights)."""
        if self.kind == "conv1x1":
            branch = self.bypass.weight
        else:
            depthwise, pointwise = self.bypass[0].weight, self.bypass[1].weight
            branch = pointwise * depthwise.transpose(0, 1)  # (O, I, 1…) · (1, I, 3…)
        pad = []
        for k, b in zip(reversed(self.conv.kernel_size), reversed(branch.shape[2:]), strict=True):
            pad += [(k - b) // 2] * 2
        return nn.functional.pad(branch, pad)

    @property
    def kind(self) -> str:
        return "dwconv3x3" if isinstance(self.bypass, nn.Sequential) else "conv1x1"


def make_bypass(conv: nn.Conv2d | nn.Conv3d, kind: str) -> nn.Module:
    """The branch for ``conv`` (initialised as torch initialises a conv). A Conv3d gets the 3D
    counterparts (1×1×1; depth-wise 3×3×3 then 1×1×1). A dilated conv qualifies when its
    padding keeps the size, ``dilation·(k−1)/2``: the branch is undilated with padding 0 or 1,
    so the outputs have the same size."""
    if not isinstance(conv, nn.Conv2d | nn.Conv3d) or conv.groups != 1:
        raise ValueError("a bypass is for a plain (groups=1) Conv2d or Conv3d")
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError("a bypass needs a conv with numeric zero padding")
    pad = [d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation, strict=True)]
    if list(conv.padding) != pad:  # the branch matches "same"-style padding only
        raise ValueError(f"a bypass needs padding dilation·(k-1)/2 = {pad}, not {conv.padding}")
    c_in, c_out = conv.in_channels, conv.out_channels
    conv_type = nn.Conv3d if isinstance(conv, nn.Conv3d) else nn.Conv2d
    if kind == "conv1x1":
        return conv_type(c_in, c_out, 1, stride=conv.stride, bias=False)
    if kind == "dwconv3x3":
        return nn.Sequential(
            conv_type(c_in, c_in, 3, stride=conv.stride, padding=1, groups=c_in, bias=False),
            conv_type(c_in, c_out, 1, bias=False),
        )
    raise ValueError(f"bypass kind {kind!r}; choices: {KINDS}")


def add_bypasses(model: nn.Module, layers: list[str], kind: str) -> dict[str, str]:
    """Wrap each conv in ``layers`` with a ``kind`` bypass (in place). Returns
    ``{layer: layer + ".conv"}``: where each conv now lives (identity for ``none``)."""
    if kind not in KINDS:
        raise ValueError(f"bypass kind {kind!r}; choices: {KINDS}")
    if kind == "none":
        return {n: n for n in layers}
    for name in layers:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, Bypassed(model.get_submodule(name), kind))
    return {n: f"{n}.conv" for n in layers}


def bypass_spatial(model: nn.Module, prunable: list[str], kind: str) -> list[str]:
    """Wrap every k×k conv (k > 1) of ``prunable`` with a ``kind`` bypass — beside a 1×1 conv or
    a linear layer a 1×1 branch adds nothing — and return ``prunable`` renamed to where each
    layer now lives (LAPP's ``prepare``, and the scratch control rebuilding its architecture)."""
    spatial = [
        n for n in prunable if set(getattr(model.get_submodule(n), "kernel_size", (1,))) != {1}
    ]
    where = add_bypasses(model, spatial, kind)
    return [where.get(n, n) for n in prunable]


def bypasses(model: nn.Module) -> dict[str, str]:
    """``{name: kind}`` for every :class:`Bypassed` in ``model`` (what a checkpoint keeps)."""
    return {n: m.kind for n, m in model.named_modules() if isinstance(m, Bypassed)}
