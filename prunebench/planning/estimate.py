"""A point's compute from its work and a throughput figure: seconds on the figure's device."""

from __future__ import annotations

from prunebench.planning.throughput import Throughput
from prunebench.planning.work import Work


def seconds(work: Work, fig: Throughput, overhead: float = 1.0) -> float:
    """Training samples at the training rate — the compress stage's slowed by the method's
    step ``overhead`` — plus forward-only samples at the evaluation rate."""
    train = work.baseline + work.compress * overhead + work.finetune
    return train / fig.train_per_s + work.forward / fig.eval_per_s


def unit(device: str) -> str:
    """``GPU-h`` for a GPU, ``CPU-h`` (wall hours of the probed threads) for the CPU."""
    return "CPU-h" if device.startswith("cpu") else "GPU-h"


def hours(secs: float | None) -> str:
    """Seconds as hours, to two significant figures below 10 (``—`` when unknown)."""
    if secs is None:
        return "—"
    h = secs / 3600
    return f"{h:.2g}" if h < 10 else f"{h:,.0f}"
