"""A plan: what a method decided to keep, as plain JSON-serialisable data.

Methods return plans; the core applies them (masks while training, physical slimming at the end).
Entries are keyed by the name of the layer whose output channels form a coupled group (see
``prunebench.surgery.structure``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

KINDS = ("filter", "kernel", "column", "lowrank")


@dataclass
class PlanEntry:
    """Keep ``keep`` (sorted indices) of the ``size`` units of one layer or group.

    Attributes:
        kind: the unit: ``"filter"`` (output channels of a group root, with everything coupled
            to them), ``"kernel"`` (``W[n, c]`` of one conv; index ``n·C_in + c``) or
            ``"column"`` (``W[:, c, i, j…]`` of one conv, every filter's weight at one input
            position; index ``c·kh·kw + i·kw + j``, see ``prunebench.surgery.columns``).
        size: number of units before pruning.
        keep: indices kept, ascending.
        shape: ``[C_out, C_in]`` for kernel entries, ``[C_in, k…]`` for column entries.
        scheme: for ``"lowrank"`` entries (a conv factorised into two; units are singular
            values, ``keep = [0, …, r−1]``): ``"channel"`` or ``"spatial"``.
    """

    kind: str
    size: int
    keep: list[int]
    shape: list[int] | None = None
    scheme: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"plan entry kind={self.kind!r}; choices: {KINDS}")
        self.keep = sorted(int(i) for i in self.keep)
        if not self.keep:
            raise ValueError("a plan entry must keep at least one unit")
        if self.keep[0] < 0 or self.keep[-1] >= self.size or len(set(self.keep)) != len(self.keep):
            raise ValueError(f"plan entry keeps invalid indices for size {self.size}")
        if self.kind == "kernel" and (
            self.shape is None or self.shape[0] * self.shape[1] != self.size
        ):
            raise ValueError(f"kernel entry needs shape [C_out, C_in] with product {self.size}")
        if self.kind == "column" and (self.shape is None or math.prod(self.shape) != self.size):
            raise ValueError(f"column entry needs shape [C_in, k…] with product {self.size}")
        if self.kind == "lowrank" and (
            self.scheme not in ("channel", "spatial") or self.keep != list(range(len(self.keep)))
        ):
            raise ValueError("lowrank entry needs scheme channel|spatial and keep = [0, …, r−1]")

    @classmethod
    def lowrank(cls, rank: int, full_rank: int, scheme: str) -> PlanEntry:
        """Factorise a conv at ``rank`` of its ``full_rank`` singular values."""
        return cls("lowrank", full_rank, list(range(rank)), scheme=scheme)

    @classmethod
    def from_kernel_mask(cls, mask: torch.Tensor) -> PlanEntry:
        """A kernel entry from a bool (C_out, C_in) mask of kept kernels."""
        return cls._from_mask("kernel", mask)

    @classmethod
    def from_column_mask(cls, mask: torch.Tensor) -> PlanEntry:
        """A column entry from a bool (C_in, k…) mask of kept columns."""
        return cls._from_mask("column", mask)

    @classmethod
    def _from_mask(cls, kind: str, mask: torch.Tensor) -> PlanEntry:
        return cls(
            kind, mask.numel(), torch.nonzero(mask.flatten()).flatten().tolist(), list(mask.shape)
        )

    def mask(self) -> torch.Tensor:
        """A kernel or column entry's bool mask of shape ``shape`` — (C_out, C_in) kernels or
        (C_in, k…) columns: True where kept."""
        mask = torch.zeros(self.size, dtype=torch.bool)
        mask[self.keep] = True
        return mask.view(*self.shape)

    @property
    def pruned(self) -> list[int]:
        kept = set(self.keep)
        return [i for i in range(self.size) if i not in kept]


def _copy(value):
    return list(value) if isinstance(value, list) else value


@dataclass
class Plan:
    """Module name → :class:`PlanEntry`. An empty plan means "keep everything" (dense)."""

    entries: dict[str, PlanEntry] = field(default_factory=dict)

    def to_dict(self) -> dict:
        # Field by field, not dataclasses.asdict: asdict deep-copies every index one by one
        # (11 s for the 1.4 M kept kernels of a KCP plan on DeepLab).
        return {
            "version": 1,
            "entries": {
                k: {f.name: _copy(getattr(v, f.name)) for f in fields(v)}
                for k, v in self.entries.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        return cls({k: PlanEntry(**v) for k, v in data.get("entries", {}).items()})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def widths(self) -> dict[str, int]:
        """Kept units per entry."""
        return {k: len(v.keep) for k, v in self.entries.items()}
