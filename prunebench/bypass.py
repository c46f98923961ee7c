"""Bypasses: a lightweight branch added in parallel to a conv, ``y = conv(x) + bypass(x)``.

A layer replacement (like the low-rank and column convs of ``prunebench.slim``): the conv at
``name`` becomes a :class:`Bypassed` module holding the conv at ``name.conv`` and the branch at
``name.bypass``. Kinds: ``conv1x1`` (a 1×1 conv C_in → C_out), ``dwconv3x3`` (a depth-wise 3×3
conv on C_in channels, then a 1×1 conv C_in → C_out: a depth-wise conv alone ties each output to
an input channel, so its outputs could not follow the conv's pruned filters) and ``none``. The branch has the conv's stride and the
padding that keeps the conv's output size, so the outputs add. Its weights are ordinary
parameters: the shared counter (``prunebench.measure``) counts its MACs and params, and the
dependency graph couples its input channels to the conv's inputs and its output channels to the
conv's outputs (a sum, as a residual is), so slimming a plan shrinks it with the conv
(``tests/test_lapp.py`` checks masked ≡ slimmed).
"""

from __future__ import annotations

import torch
from torch import nn

KINDS = ("none", "conv1x1", "dwconv3x3")


class Bypassed(nn.Module):
    """``conv(x) + bypass(x)``."""

    def __init__(self, conv: nn.Conv2d, kind: str) -> None:
        super().__init__()
        self.conv, self.bypass = conv, make_bypass(conv, kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.bypass(x)

    @property
    def kind(self) -> str:
        return "conv1x1" if isinstance(self.bypass, nn.Conv2d) else "dwconv3x3"


def make_bypass(conv: nn.Conv2d, kind: str) -> nn.Module:
    """The branch for ``conv`` (initialised as torch initialises a conv)."""
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise ValueError("a bypass is for a plain (groups=1) Conv2d")
    if conv.padding_mode != "zeros":
        raise ValueError("a bypass needs a zero-padded conv")
    # "same"-style padding d·(k-1)/2 (dilated convs included: DeepLab's ASPP and dilated stages)
    # gives the branch's output size at the conv's stride.
    pad = [d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation, strict=True)]
    if list(conv.padding) != pad:  # the branch matches "same"-style padding only
        raise ValueError(f"a bypass needs padding d·(k-1)/2 = {pad}, not {conv.padding}")
    c_in, c_out = conv.in_channels, conv.out_channels
    if kind == "conv1x1":
        return nn.Conv2d(c_in, c_out, 1, stride=conv.stride, bias=False)
    if kind == "dwconv3x3":
        return nn.Sequential(
            nn.Conv2d(c_in, c_in, 3, stride=conv.stride, padding=1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
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


def bypasses(model: nn.Module) -> dict[str, str]:
    """``{name: kind}`` for every :class:`Bypassed` in ``model`` (what a checkpoint keeps)."""
    return {n: m.kind for n, m in model.named_modules() if isinstance(m, Bypassed)}
