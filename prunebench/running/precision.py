"""Which numeric precision training runs in: ``trainer.precision: auto`` (the default) picks
Lightning's ``bf16-mixed`` where the hardware multiplies bf16 natively and ``32-true`` elsewhere.

- CPU: bf16 when the processor has bf16 matrix instructions (AMX-BF16 or AVX512-BF16), read from
  ``/proc/cpuinfo``'s flags and torch's own CPU probes. Without them bf16 is emulated and slower
  than fp32, so an explicit ``trainer.precision=bf16-mixed`` there is refused.
- CPU, per model: some bf16 kernels are wrong for some layer shapes (e.g. a ``Conv3d`` weight
  gradient on an input 2 deep, in PSMNet's hourglass at the cpu tier). Before a CPU run trains in
  bf16, ``prunebench.running.bf16_check`` runs each of the model's convolution and linear calls
  in bf16 and fp32; if one disagrees, ``auto`` trains in fp32 (the record's ``precision.fallback``
  says which layer) and an explicit bf16 value is refused.
- GPU: bf16 where ``torch.cuda.is_bf16_supported()`` (Ampere and later), else fp32.

Only training (baseline, compress, finetune) runs in the resolved precision: evaluation metrics,
the compressed model and its latency stay fp32 (``prunebench.running.module`` turns autocast off for
evaluation and for the methods' extra losses).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from prunebench.errors import ConfigError

AUTO = "auto"
FP32 = "32-true"
BF16 = "bf16-mixed"
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of the bf16 matrix instructions


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX-BF16 or AVX512-BF16)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                if set(BF16_FLAGS) & set(line.split()):
                    return True
                break
    except OSError:
        pass
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch's private probes
    return any(getattr(torch.cpu, p, lambda: False)() for p in probes)


def gpu_has_bf16() -> bool:
    """Whether the visible GPU computes in bf16 at full speed."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _on_gpu(trainer: dict[str, Any]) -> bool:
    accelerator = trainer.get("accelerator")
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def is_bf16(precision: Any) -> bool:
    """Whether a Lightning precision value computes in bf16 (``bf16-mixed``, ``bf16-true``…)."""
    return str(precision).startswith("bf16")


def resolve_precision(
    trainer: dict[str, Any], refusal: Callable[[], str | None] = lambda: None
) -> Any:
    """The precision ``trainer`` (the config's ``trainer`` block) trains in: ``auto`` resolved
    for this machine, an explicit value checked. A bf16 value on a CPU without bf16 matrix
    instructions is a :class:`ConfigError` (it would run emulated, slower than fp32).
    ``refusal`` says why the run's model must not train in bf16 on this CPU (None: it may):
    ``auto`` then picks fp32 and an explicit bf16 value is a :class:`ConfigError`."""
    value = trainer.get("precision", FP32)
    gpu = _on_gpu(trainer)
    if value == AUTO:
        if gpu:
            return BF16 if gpu_has_bf16() else FP32
        return BF16 if cpu_has_bf16() and refusal() is None else FP32
    if is_bf16(value) and not gpu and not cpu_has_bf16():
        raise ConfigError(
            f"trainer.precision={value!r}: this CPU has no bf16 matrix instructions "
            f"({' / '.join(BF16_FLAGS)}), so bf16 would run emulated and slower than fp32; "
            f"choices here: {AUTO}, {FP32}"
        )
    if is_bf16(value) and not gpu and (why := refusal()) is not None:
        raise ConfigError(f"trainer.precision={value!r}: {why}; choices here: {AUTO}, {FP32}")
    return value  # as given (an int 32 stays 32: the point id of such a config is unchanged)
