"""Typed views of the run config's groups, read once when a run starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prunebench.errors import ConfigError
from prunebench.method import Method
from prunebench.surgery.target import validate_target


@dataclass(frozen=True)
class Target:
    """The run's ``target`` group.

    Attributes:
        macs_reduction: fraction of the dense model's MACs removed, in (0, 1).
        round_to: filter plans the core solves keep multiples of this many channels (1: exact).
    """

    macs_reduction: float
    round_to: int = 1

    @classmethod
    def from_config(cls, target: dict[str, Any]) -> Target:
        """The checked ``target`` group (``round_to`` is an integer ≥ 1, checked by
        ``validate_config``)."""
        return cls(validate_target(target["macs_reduction"]), target.get("round_to", 1))

    def check_method(self, method: Method, name: str) -> None:
        """``round_to`` > 1 only for a method whose plan is the core's filter solve (it would
        otherwise be silently ignored)."""
        if self.round_to > 1 and method.uses_target and not method.core_filter_solve:
            raise ConfigError(
                f"target.round_to={self.round_to} rounds the filter plans the core solves "
                f"(methods magnitude, random); method {name!r} sets its widths itself: "
                "use round_to=1"
            )
