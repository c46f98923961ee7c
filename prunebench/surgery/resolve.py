"""What a plan removes once its consequences are followed, in one place.

A plan states filters (whole output channels of a group), kernels (``W[n, c]`` slices of a
conv) and columns (``W[:, c, i, j…]``, one input position across all filters). Two consequences
follow, and masks, slimming and MAC counting all use this module so they
agree:

* a filter of a group's root whose kernels are all pruned is removed as a filter: its BN channel
  is masked too (else BN would emit a constant there) and the channel leaves the consumers;
* a channel that no consumer reads any more (every in-member conv has all kernels ``[:, c]``
  pruned, or all its columns ``[c]``) is removed from its producer — this changes nothing the
  network computes.

A consumer reading the group through a concat (an ASPP projection) reads channel c at the
offset index the dependency graph traced (``ChannelGroup.reader_index``), and a linear layer
reading a flattened map reads it at H·W inputs (``ChannelGroup.reader_columns``); where that
index cannot be told (a grouped conv) the rule is not applied, conservatively.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from prunebench.plan import Plan


@dataclass
class Resolved:
    """Kept channels per group root, the alive-kernel mask of each kernel-masked conv, the kept
    columns (bool (C_in, k…)) of each column-masked conv, and the (scheme, rank) of each conv to
    factorise."""

    filters: dict[str, list[int]]
    kernels: dict[str, torch.Tensor]
    lowrank: dict[str, tuple[str, int]] = field(default_factory=dict)
    columns: dict[str, torch.Tensor] = field(default_factory=dict)

    def alive(self, structure) -> dict[str, torch.Tensor]:
        """conv/linear name → bool (C_out, C_in): the kernels that still compute anything."""
        out = {n: torch.ones(shape, dtype=torch.bool) for n, shape in structure.shapes.items()}
        for name, mask in self.kernels.items():
            out[name] &= mask
        for name, mask in self.columns.items():  # a channel with no column left is not read
            out[name] &= mask.flatten(1).any(1).unsqueeze(0)
        for root, keep in self.filters.items():
            g = structure.groups[root]
            gone = torch.ones(g.size, dtype=torch.bool)
            gone[keep] = False
            for m in g.out_members:
                index = g.writer_index(m, out[m].shape[0]) if m in out else None
                if index is not None:
                    out[m][torch.tensor(index)[gone], :] = False
            for m in g.in_members:  # a flattened map's reader loses H·W inputs per channel
                cols = g.reader_columns(m, out[m].shape[1]) if m in out else None
                if cols is not None:
                    out[m][:, cols[gone].flatten()] = False
        return out


def resolve(plan: Plan, structure) -> Resolved:
    """Follow ``plan``'s consequences (see the module docstring)."""
    filters, kernels, lowrank, columns = {}, {}, {}, {}
    for name, e in plan.entries.items():
        if e.kind == "kernel":
            kernels[name] = e.mask()
        elif e.kind == "column":
            columns[name] = e.mask()
        elif e.kind == "lowrank":
            lowrank[name] = (e.scheme, len(e.keep))
        else:
            filters[name] = torch.zeros(e.size, dtype=torch.bool)
            filters[name][e.keep] = True
    resolved = resolve_masks(filters, kernels, structure, columns)
    resolved.lowrank = lowrank
    return resolved


def resolve_masks(
    filters: dict[str, torch.Tensor],
    kernels: dict[str, torch.Tensor],
    structure,
    columns: dict[str, torch.Tensor] | None = None,
) -> Resolved:
    """:func:`resolve` on masks: group root → bool kept channels, conv → bool (C_out, C_in) kept
    kernels, conv → bool (C_in, k…) kept columns."""
    columns = columns or {}
    # What each masked consumer still reads: bool (C_out, C_in); a column mask spans all filters.
    reads = {**{n: m.flatten(1).any(1).unsqueeze(0) for n, m in columns.items()}, **kernels}
    kept_filters: dict[str, list[int]] = {}
    for root, g in structure.groups.items():
        kept = filters[root].clone() if root in filters else torch.ones(g.size, dtype=torch.bool)
        if root in kernels:  # dead filters of the root
            kept &= kernels[root].any(dim=1)
        readers = [m for m in g.in_members if m in structure.shapes]
        index = {m: g.reader_columns(m, reads[m].shape[1]) for m in readers if m in reads}
        if readers and all(index.get(m) is not None for m in readers):
            read = torch.zeros(g.size, dtype=torch.bool)
            for m in readers:  # channel c is read if any of its inputs is
                read |= reads[m].any(dim=0)[index[m]].any(dim=1)
            kept &= read
        if not kept.any():  # never remove a whole group: keep channel 0 so shapes stay valid
            kept[0] = True
        if not kept.all():
            kept_filters[root] = torch.nonzero(kept).flatten().tolist()
    return Resolved(filters=kept_filters, kernels=kernels, columns=columns)
