"""Physical removal: a plan becomes a smaller model whose tensors really shrink.

Whole filters and channels (stated by the plan or implied by its kernels, see
``prunebench.surgery.resolve``) are removed through Torch-Pruning's dependency graph; kernels that remain
pruned inside a surviving conv stay as a kernel mask on the slimmed weight, so finetuning cannot
revive them and the analytic MACs (surviving kernels) can differ from the realised ones. Low-rank
entries replace a conv by its two-conv factorisation (``prunebench.surgery.lowrank``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from prunebench.plan import Plan
from prunebench.surgery.columns import ColumnConv
from prunebench.surgery.lowrank import decompose
from prunebench.surgery.masks import register_kernel_mask, remove_masks
from prunebench.surgery.resolve import resolve
from prunebench.surgery.structure import Structure, build_dependency_graph, out_channel_group


def slim(
    model: nn.Module, plan: Plan, example_input: torch.Tensor, structure: Structure
) -> nn.Module:
    """Return a slimmed copy of ``model`` (``model`` is untouched); masks are baked in first, so
    a masked model slims to the same function."""
    slimmed = remove_masks(copy.deepcopy(model), bake=True)
    if not plan.entries:
        return slimmed
    res = resolve(plan, structure)
    # layer → its output (rows) / input (cols) channels that leave with removed filters
    dropped_rows: dict[str, set[int]] = {}
    dropped_cols: dict[str, set[int]] = {}
    for root, keep in res.filters.items():
        g = structure.groups[root]
        gone = torch.ones(g.size, dtype=torch.bool)
        gone[keep] = False
        for members, find, dim, dropped in (
            (g.out_members, g.writer_index, 0, dropped_rows),
            (g.in_members, g.reader_index, 1, dropped_cols),
        ):
            for m in members:
                index = find(m, structure.shapes[m][dim]) if m in structure.shapes else None
                if index is not None:  # k entries per channel (k = H·W: a flattened map's reader)
                    cols = torch.tensor(index).view(g.size, -1)[gone].flatten()
                    dropped.setdefault(m, set()).update(cols.tolist())
    rows, cols = (
        {m: [i for i in range(structure.shapes[m][dim]) if i not in d] for m, d in dropped.items()}
        for dim, dropped in ((0, dropped_rows), (1, dropped_cols))
    )
    dg = build_dependency_graph(slimmed, example_input)
    for root, keep in res.filters.items():
        pruned = sorted(set(range(structure.groups[root].size)) - set(keep))
        out_channel_group(dg, slimmed.get_submodule(root), pruned).prune()
    for name, mask in res.kernels.items():
        c_out, c_in = mask.shape
        mask = mask[rows.get(name, list(range(c_out)))][:, cols.get(name, list(range(c_in)))]
        register_kernel_mask(slimmed.get_submodule(name), mask)
    for name, (scheme, rank) in res.lowrank.items():  # layer replacement: conv → two convs
        _replace(slimmed, name, decompose(slimmed.get_submodule(name), rank, scheme))
    for name, mask in res.columns.items():  # layer replacement: conv → kept-column GEMM
        mask = mask[cols.get(name, list(range(mask.shape[0])))]
        if not bool(mask.all()):
            _replace(slimmed, name, ColumnConv(slimmed.get_submodule(name), mask))
    return slimmed


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
