"""The scratch control: a pruned architecture trained from a fresh initialisation — Liu, Sun,
Zhou, Huang, Darrell, "Rethinking the Value of Network Pruning", ICLR 2019 (arXiv 1810.05270).

Liu et al. retrain the architecture a pruning method found, from scratch, for as long as the
method trained, and often match it: the architecture, not the inherited weights, carries the
result. ``widths`` (group root → kept filters, a record's ``plan_widths``) is that architecture;
``scripts/controls.py`` copies it, the bypass kind and the epochs from a from-scratch method's
record (LAPP). With ``widths`` null (or empty) the architecture is the uniform one at
``target.macs_reduction`` (every group keeps the same fraction).

Which filters are kept does not matter from a fresh initialisation: the first ``widths[root]``.
Training is the task's ``baseline`` recipe for ``epochs`` (null: ``budget.baseline_epochs``), the
masked model standing for the small one; there is no finetune. Deviation from Liu et al.: their
"Scratch-E" trains the same epochs as the large model's training, "Scratch-B" the same
computation; here the epochs are matched to the method's own training (Scratch-E in spirit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prunebench.errors import ConfigError
from prunebench.method import CompressContext, Method, filter_refusal
from prunebench.options import option
from prunebench.plan import Plan, PlanEntry
from prunebench.surgery.bypass import KINDS, bypass_spatial


@dataclass
class Scratch(Method):
    start = "scratch"
    finetune = False
    widths: dict[str, int] | None = option(None)
    epochs: int | None = option(None, within="[1, inf)")
    bypass: str = option("none", choices=KINDS)  # the method's bypass (LAPP: conv1x1)
    warmup_epochs: float = option(0.0, within="[0, inf)")  # the method's own warm-up

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, width in (self.widths or {}).items():
            if not isinstance(width, int) or width < 1:
                raise ConfigError(f"method.widths.{name}={width!r}: must be an integer ≥ 1")

    def prepare(self, model: nn.Module, prunable: list[str]) -> list[str]:
        """The method's bypasses, as it added them (only beside k×k convs, k > 1)."""
        return bypass_spatial(model, prunable, self.bypass)

    def refusal(self, ctx: CompressContext) -> str | None:
        """No channel group (every one reaches a grouped conv: ResNeXt), or — for the uniform
        architecture — a target beyond one channel per group."""
        return filter_refusal(ctx, check_target=not self.widths)

    def architecture(self, ctx: CompressContext) -> Plan:
        """The plan of the architecture: ``widths`` (first filters kept), or the uniform one."""
        groups = ctx.structure.groups
        if not self.widths:
            return ctx.solve({r: torch.ones(g.size) for r, g in groups.items()}, "uniform")
        unknown = sorted(set(self.widths) - set(groups))
        if unknown:
            raise ConfigError(
                f"method.widths names {unknown}, not prunable groups of this model "
                f"(bypass={self.bypass!r}); groups: {sorted(groups)}"
            )
        entries = {}
        for root, width in self.widths.items():
            if width > groups[root].size:
                raise ConfigError(f"method.widths.{root}={width} > its {groups[root].size} filters")
            entries[root] = PlanEntry("filter", groups[root].size, list(range(width)))
        return Plan(entries)

    def compress(self, ctx: CompressContext) -> Plan:
        plan = self.architecture(ctx)
        ctx.apply_masks(plan)
        warm = {"warmup_epochs": self.warmup_epochs} if self.warmup_epochs > 0 else {}
        ctx.train(self.epochs or ctx.baseline_epochs, None, "baseline", **warm)
        return plan
