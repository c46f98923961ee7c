"""Prunable layers and their coupling, found by Torch-Pruning's ``DependencyGraph``.

A task declares which layers' output channels may be pruned; for each such *root* layer the
dependency graph yields the coupled group: the layers whose output dimension shrinks with it
(the root conv, its BN) and the layers whose input dimension shrinks (the next conv). The outputs
of protected layers (first conv, classifier, …) must never shrink: that is checked here.

:class:`MacModel` predicts the MACs of any choice of group widths from the dense per-module counts,
so target solvers never rebuild the model; ``tests/`` check it against a real slimmed count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from prunebench.errors import ConfigError
from prunebench.measure import count_macs


@dataclass
class ChannelGroup:
    """The output channels of ``root`` and everything coupled to them.

    Attributes:
        root: name of the layer whose output channels are the group's units.
        size: number of channels.
        out_members: layers whose output dimension (weight dim 0, bias, BN affine) shrinks.
        in_members: layers whose input dimension shrinks.
    """

    root: str
    size: int
    out_members: list[str] = field(default_factory=list)
    in_members: list[str] = field(default_factory=list)


def build_dependency_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """Trace ``model`` on ``example_input`` (in eval mode, so BN statistics stay untouched)."""
    was_training = model.training
    model.eval()
    try:
        return tp.DependencyGraph().build_dependency(
            model, example_inputs=example_input, verbose=False
        )
    finally:
        model.train(was_training)


def out_channel_group(dg: tp.DependencyGraph, module: nn.Module, idxs: Sequence[int]):
    """Torch-Pruning's group that removes output channels ``idxs`` of ``module``."""
    pruner = dg.get_pruner_of_module(module)
    return dg.get_pruning_group(module, pruner.prune_out_channels, list(idxs))


class Structure:
    """The coupled channel groups of a model, keyed by root layer name."""

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        prunable: Sequence[str],
        protected: Sequence[str] = (),
    ) -> None:
        names = {m: n for n, m in model.named_modules()}
        dg = build_dependency_graph(model, example_input)
        self.groups: dict[str, ChannelGroup] = {}
        for root in prunable:
            module = model.get_submodule(root)
            size = dg.get_out_channels(module)
            group = ChannelGroup(root=root, size=size)
            for dep, _ in out_channel_group(dg, module, range(size)).items:
                target = names.get(dep.target.module)
                if target is None:  # functional ops (add, cat, …) carry no parameters
                    continue
                side = (
                    group.out_members
                    if dg.is_out_channel_pruning_fn(dep.handler)
                    else group.in_members
                )
                if target not in side:
                    side.append(target)
            clash = sorted(set(group.out_members) & set(protected))
            if clash:
                raise ConfigError(
                    f"pruning the output channels of {root!r} would shrink the outputs of "
                    f"protected layer(s) {clash}"
                )
            self.groups[root] = group

    def sizes(self) -> dict[str, int]:
        return {k: g.size for k, g in self.groups.items()}


class MacModel:
    """MACs as a function of group widths: each conv/linear scales by its kept in × out fraction."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, structure: Structure) -> None:
        self.per_module = count_macs(model, example_input).per_module
        self.dense_total = sum(self.per_module.values())
        self.sizes = structure.sizes()
        self._out: dict[str, str] = {}
        self._in: dict[str, str] = {}
        for root, g in structure.groups.items():
            for m in g.out_members:
                self._out[m] = root
            for m in g.in_members:
                self._in[m] = root

    def macs(self, widths: dict[str, int]) -> int:
        """Total MACs with group ``root`` at ``widths[root]`` channels (missing roots: dense)."""
        frac = {r: widths.get(r, n) / n for r, n in self.sizes.items()}
        total = 0.0
        for name, macs in self.per_module.items():
            f_out = frac[self._out[name]] if name in self._out else 1.0
            f_in = frac[self._in[name]] if name in self._in else 1.0
            if name in self._out and name in self._in and self._out[name] == self._in[name]:
                f_in = 1.0  # depthwise: one group drives both sides
            total += macs * f_out * f_in
        return int(round(total))

    def reduction(self, widths: dict[str, int]) -> float:
        """Fraction of dense MACs removed."""
        return 1.0 - self.macs(widths) / self.dense_total
