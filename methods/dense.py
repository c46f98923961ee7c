"""The dense control: no compression; its record is the shared baseline itself."""

from __future__ import annotations

from prunebench.method import CompressContext, Method
from prunebench.plan import Plan


class Dense(Method):
    """Keeps every unit and skips finetuning, so its numbers are the baseline's."""

    finetune = False
    uses_target = False

    def compress(self, ctx: CompressContext) -> Plan:
        return Plan()
