"""Prunable layers and their coupling, found by Torch-Pruning's ``DependencyGraph``.

A task declares which layers' output channels may be pruned; for each such *root* layer the
dependency graph yields the coupled group: the layers whose output dimension shrinks with it
(the root conv, its BN) and the layers whose input dimension shrinks (the next conv). The outputs
of protected layers (first conv, classifier, …) must never shrink: that is checked here.

:class:`MacModel` predicts the MACs of any plan from the dense per-module counts, so target
solvers never rebuild the model; ``tests/`` check it against a real slimmed count.

:func:`find_roots` picks a model's prunable roots by itself (for models no task hand-lists, such
as timm's): every layer's group is traced once and kept when it is *inner* (no residual sum, no
protected layer, one channel per unit, no grouped conv); why each other candidate was left whole
is returned beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from prunebench.errors import ConfigError
from prunebench.plan import Plan
from prunebench.surgery.lowrank import macs_fraction_num_den
from prunebench.surgery.measure import count_macs
from prunebench.surgery.resolve import resolve, resolve_masks


@dataclass
class ChannelGroup:
    """The output channels of ``root`` and everything coupled to them.

    Attributes:
        root: name of the layer whose output channels are the group's units.
        size: number of channels.
        out_members: layers whose output dimension (weight dim 0, bias, BN affine) shrinks.
        in_members: layers whose input dimension shrinks.
        in_index, out_index: member → the channel of that layer's input (in-members) or output
            (out-members) that each of the group's channels is (``in_index[m][c]``); a concat
            offsets it (an ASPP projection reads branch k's channel c at ``k·256 + c``), as the
            dependency graph traced it. A linear layer reading the group's (C, H, W) map
            flattened (AlexNet's and VGG's first classifier layer, after an adaptive pool) reads
            each channel at H·W consecutive inputs: its ``in_index`` is H·W entries per channel,
            channel-major (:meth:`reader_span`).
    """

    root: str
    size: int
    out_members: list[str] = field(default_factory=list)
    in_members: list[str] = field(default_factory=list)
    in_index: dict[str, list[int]] = field(default_factory=dict)
    out_index: dict[str, list[int]] = field(default_factory=dict)

    def reader_index(self, member: str, c_in: int) -> list[int] | None:
        """The inputs of in-member ``member`` (``c_in`` inputs) that read the group's channels,
        channel-major: channel c at ``index[c·k:(c+1)·k]``, k = :meth:`reader_span` (1 but for a
        linear layer reading a flattened map); None where they cannot be told (e.g. a grouped
        conv's weight)."""
        return _fit(self.in_index.get(member), self.size, c_in)

    def reader_span(self, member: str) -> int:
        """Inputs of in-member ``member`` per channel of the group: 1, or H·W for a linear layer
        reading the group's (C, H, W) map flattened."""
        index = self.in_index.get(member)
        return max(1, len(index) // self.size) if index else 1

    def reader_columns(self, member: str, c_in: int) -> torch.Tensor | None:
        """:meth:`reader_index` as a (size, k) LongTensor: row c holds the inputs of ``member``
        that read channel c; None where they cannot be told."""
        index = self.reader_index(member, c_in)
        return None if index is None else torch.tensor(index).view(self.size, -1)

    def writer_index(self, member: str, c_out: int) -> list[int] | None:
        """The output channels of out-member ``member`` (``c_out`` outputs) that are the group's
        channels (a depth-wise conv after a concat: an offset slice), in order."""
        return _fit(self.out_index.get(member), self.size, c_out)


def _fit(index: list[int] | None, size: int, n: int) -> list[int] | None:
    if index is None:
        return list(range(size)) if n == size else None
    return index if max(index) < n else None


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


def is_grouped(module: nn.Module) -> bool:
    """A grouped conv that is not depth-wise (1 < groups < C_in): removing some of its input or
    output channels must take the same number from every group, which a channel group's plan
    (any subset of channels) cannot promise."""
    groups = getattr(module, "groups", 1)
    return isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and 1 < groups < module.in_channels


def flatten_span(index: Sequence[int], size: int) -> int | None:
    """k when ``index`` reads each of ``size`` channels at k consecutive inputs starting at a
    multiple of k — a (C, H, W) map flattened channel-major, k = H·W — else None."""
    if not index or len(index) % size:
        return None
    k = len(index) // size
    blocks = torch.tensor(list(index)).view(size, k)
    consecutive = bool((blocks - blocks[:, :1] == torch.arange(k)).all())
    return k if consecutive and bool((blocks[:, 0] % k == 0).all()) else None


def group_defect(group: ChannelGroup, model: nn.Module) -> str | None:
    """Why ``group`` cannot be pruned as one set of channels, or None: a member whose traced
    index is not one channel per unit (a reshape into attention heads, a q/k/v split) — except a
    linear layer reading the group's map flattened (H·W inputs per channel, :func:`flatten_span`)
    — or a grouped conv among its members."""
    for side in (group.out_index, group.in_index):
        for member, index in side.items():
            flattened = (
                side is group.in_index
                and isinstance(model.get_submodule(member), nn.Linear)
                and flatten_span(index, group.size) is not None
            )
            if len(index) != group.size and not flattened:
                return (
                    f"{member!r} sees {len(index)} channels for the group's {group.size} (a "
                    "reshape, e.g. into attention heads)"
                )
    for member in group.out_members + group.in_members:
        if is_grouped(model.get_submodule(member)):
            return f"{member!r} is a grouped conv (groups={model.get_submodule(member).groups})"
    return None


KERNEL_LAYER_TYPES = (nn.Conv2d, nn.Conv3d)  # weight (C_out, C_in/groups, k…): kernel = W[n, c]


class Structure:
    """The coupled channel groups of a model, keyed by root layer name, and the layers whose
    kernels may be pruned one by one (every non-transposed conv that is not protected).

    Attributes:
        groups: root name → :class:`ChannelGroup`.
        shapes: conv/linear name → (C_out, C_in) of its weight.
        kernel_sizes, strides: conv name → its kernel size and stride.
        kernel_layers: names of the convs that kernel-level methods may prune.
        bn_after: conv/linear name → the BatchNorm that alone reads its output (``conv2 → bn2``),
            where there is one (compensation folds a bias change into it).
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        prunable: Sequence[str],
        protected: Sequence[str] = (),
    ) -> None:
        names = {m: n for n, m in model.named_modules()}
        self.shapes: dict[str, tuple[int, int]] = {
            n: (int(m.weight.shape[0]), int(m.weight.shape[1]))
            for n, m in model.named_modules()
            if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear)
        }
        convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Conv3d)}
        self.kernel_sizes = {n: tuple(m.kernel_size) for n, m in convs.items()}
        self.strides = {n: tuple(m.stride) for n, m in convs.items()}
        self.kernel_layers = [
            n
            for n, m in model.named_modules()
            if isinstance(m, KERNEL_LAYER_TYPES) and m.groups == 1 and n not in set(protected)
        ]
        dg = build_dependency_graph(model, example_input)
        self.bn_after: dict[str, str] = {}
        for name in self.shapes:
            node = dg.module2node.get(model.get_submodule(name))
            outs = [] if node is None else node.outputs
            if len(outs) == 1 and isinstance(outs[0].module, nn.modules.batchnorm._BatchNorm):
                if len(outs[0].inputs) == 1 and outs[0].module in names:
                    self.bn_after[name] = names[outs[0].module]
        self.groups: dict[str, ChannelGroup] = {}
        for root in prunable:
            group, _ = trace_group(dg, model, root, names)
            clash = sorted(set(group.out_members) & set(protected))
            if clash:
                raise ConfigError(
                    f"pruning the output channels of {root!r} would shrink the outputs of "
                    f"protected layer(s) {clash}"
                )
            defect = group_defect(group, model)
            if defect:
                raise ConfigError(f"the channels of {root!r} cannot be pruned as a group: {defect}")
            self.groups[root] = group

    def sizes(self) -> dict[str, int]:
        return {k: g.size for k, g in self.groups.items()}


def trace_group(
    dg: tp.DependencyGraph, model: nn.Module, root: str, names: dict[nn.Module, str]
) -> tuple[ChannelGroup, set[str]]:
    """The :class:`ChannelGroup` of ``root``'s output channels, and the autograd op names of the
    functional nodes it passes through (``AddBackward0`` for a residual sum, …)."""
    module = model.get_submodule(root)
    size = dg.get_out_channels(module)
    group = ChannelGroup(root=root, size=size)
    ops: set[str] = set()
    for dep, idxs in out_channel_group(dg, module, range(size)).items:
        target = names.get(dep.target.module)
        if target is None:  # functional ops (add, cat, …) carry no parameters
            ops.add(type(getattr(dep.target, "grad_fn", None)).__name__)
            continue
        out = dg.is_out_channel_pruning_fn(dep.handler)
        side = group.out_members if out else group.in_members
        if target not in side:
            side.append(target)
        index = [int(getattr(i, "idx", i)) for i in idxs]
        (group.out_index if out else group.in_index)[target] = index
    return group, ops


RESIDUAL_OPS = ("AddBackward0", "SubBackward0")  # two producers summed: a residual stream


def find_roots(
    model: nn.Module, example_input: torch.Tensor, protected: Sequence[str] = ()
) -> tuple[list[str], dict[str, str]]:
    """The roots of a model's *inner* channel groups, in module order, and why every other
    conv/linear layer is not one (``{layer: reason}``).

    Each ungrouped conv and linear layer that is not protected and not already a member of an
    earlier root's group is traced. Its group is kept unless it passes through a residual sum (the
    stream shared by every block of a stage stays whole, as the hand-written ImageNet and CIFAR
    tasks keep it), shrinks a protected layer's outputs, or has a :func:`group_defect` (attention
    heads, grouped convs). Depth-wise convs, squeeze-excite gates and norms follow their group.
    """
    names = {m: n for n, m in model.named_modules()}
    dg = build_dependency_graph(model, example_input)
    roots: list[str] = []
    skipped: dict[str, str] = {}
    taken: set[str] = set()
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d | nn.Conv3d | nn.Linear) or name in protected:
            continue
        if name in taken:
            continue
        if getattr(module, "groups", 1) > 1:
            skipped[name] = "grouped or depth-wise conv (its channels follow its input's)"
            continue
        group, ops = trace_group(dg, model, name, names)
        taken.update(group.out_members)
        clash = sorted(set(group.out_members) & set(protected))
        reason = (
            f"shrinks protected {clash}"
            if clash
            else "residual stream (a sum of several layers' outputs)"
            if ops & set(RESIDUAL_OPS)
            else group_defect(group, model)
        )
        if reason:
            skipped[name] = reason
        else:
            roots.append(name)
    return roots, skipped


class MacModel:
    """MACs of any plan from the dense per-module counts, without rebuilding the model: each
    conv/linear scales by the fraction of its kernels that survive; a column-masked conv by the
    fraction of its (kernel, offset) weights that survive, i.e. ``C_out · kept columns · L``
    when no filter is removed."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, structure: Structure) -> None:
        self.structure = structure
        count = count_macs(model, example_input)
        self.per_module = count.per_module
        # MACs no leaf module owns (attention's q·kᵀ and attn·v inside a parent's forward): the
        # counter's total includes them and no plan changes them.
        self.constant = count.total - sum(self.per_module.values())
        self.dense_total = count.total

    def plan_macs(self, plan: Plan) -> int:
        """Analytic MACs of ``plan``: each conv/linear counts its surviving kernels (removed filters
        and channels, kernel masks, and what they imply downstream — see ``prunebench.surgery.resolve``)."""
        return self._macs(resolve(plan, self.structure))

    def masks_reduction(
        self,
        filters: dict[str, torch.Tensor],
        kernels: dict[str, torch.Tensor],
        columns: dict[str, torch.Tensor] | None = None,
    ) -> float:
        """:meth:`plan_reduction` straight from bool masks (the solvers' fast path)."""
        resolved = resolve_masks(filters, kernels, self.structure, columns)
        return 1.0 - self._macs(resolved) / self.dense_total

    def _macs(self, resolved) -> int:
        alive = resolved.alive(self.structure)
        total = self.constant
        for name, macs in self.per_module.items():
            a = alive.get(name)
            if name in resolved.lowrank:
                scheme, rank = resolved.lowrank[name]
                if scheme == "spatial" and self.structure.strides[name] != (1, 1):
                    raise ValueError(
                        f"{name}: the spatial factorisation is only for stride-1 convs"
                    )
                shape = self.structure.shapes[name] + self.structure.kernel_sizes[name]
                num, den = macs_fraction_num_den(shape, rank, scheme)
                total += macs * num // den
            elif name in resolved.columns:  # alive kernel (n, c) computes its kept columns of c
                per_channel = resolved.columns[name].flatten(1).sum(1)
                k = resolved.columns[name][0].numel()
                total += macs * int((a.long() * per_channel).sum()) // (a.numel() * k)
            else:
                # count_nonzero: ~17× faster than a bool sum on VGG-16's 4,096 × 25,088 layer
                total += macs if a is None else macs * int(torch.count_nonzero(a)) // a.numel()
        return total

    def plan_reduction(self, plan: Plan) -> float:
        """Fraction of dense MACs that ``plan`` removes, by :meth:`plan_macs`."""
        return 1.0 - self.plan_macs(plan) / self.dense_total
