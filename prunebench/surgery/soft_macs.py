"""MACs as a differentiable function of the prunable groups' widths: the shared MAC model's
convention (``MacModel``) with tensors in place of integers, for methods that put a MACs
term into their loss (LAPP)."""

from __future__ import annotations

import torch

from prunebench.surgery.structure import MacModel


class SoftMacs:
    """MACs as a function of the prunable groups' widths n_l (tensors, differentiable), with the
    shared counter's convention: a conv/linear in group a's outputs and group b's inputs costs
    ``macs · (n_a / C_a) · (n_b / C_b)``; a layer reading a concat of several groups (an ASPP
    projection) scales its input by ``(C_in − Σ C_g + Σ n_g) / C_in``, and one reading a group's
    map flattened (k = H·W inputs per channel) by ``k·n_g / C_in``; everything else is constant.
    At integer widths it equals ``MacModel.plan_macs`` of the filter plan with those widths."""

    def __init__(self, mac_model: MacModel) -> None:
        s = mac_model.structure
        out_of = {m: r for r, g in s.groups.items() for m in g.out_members}
        # layer → the groups it reads, each with its inputs per channel (1, or H·W for a linear
        # layer reading a flattened map); several groups: a concat (DeepLab's ASPP projection)
        reads: dict[str, list[tuple[str, int]]] = {}
        for r, g in s.groups.items():
            for m in g.in_members:
                if m in s.shapes and g.reader_index(m, s.shapes[m][1]) is not None:
                    reads.setdefault(m, []).append((r, g.reader_span(m)))
        self.sizes = s.sizes()
        self.terms: list[tuple[int, str | None, list[tuple[str, int]], int]] = []
        self.constant = mac_model.constant  # MACs no layer owns (attention products)
        for name, macs in mac_model.per_module.items():
            a = out_of.get(name) if name in s.shapes else None
            b = reads.get(name, [])
            if a is None and not b:
                self.constant += macs
            else:
                self.terms.append((macs, a, b, s.shapes[name][1] if b else 1))

    def __call__(self, widths: dict[str, torch.Tensor]) -> torch.Tensor:
        total = torch.tensor(float(self.constant), dtype=torch.float64)
        for macs, a, b, c_in in self.terms:
            term = torch.tensor(float(macs), dtype=torch.float64)
            if a is not None:
                term = term * widths[a].double() / self.sizes[a]
            if b:
                gone = sum(k * self.sizes[r] for r, k in b)
                kept = c_in - gone + sum(k * widths[r].double() for r, k in b)
                term = term * kept / c_in
            total = total + term
        return total
