"""MACs, parameters and latency, under one convention (docs/architecture.md).

MACs are multiply-accumulates of conv and linear layers at batch 1, counted by
``torch.utils.flop_counter.FlopCounterMode`` (aten-level FLOPs ÷ 2); bias, BN, activations and
pooling are not counted, and a module called twice counts twice. Attention's two products
(``scaled_dot_product_attention``, inside a parent module) are counted too, on every device. Count a masked model through its
slimmed copy (``prunebench.surgery.slim.slim``): only surviving structure counts.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class MacCount:
    """Total MACs and the MACs of each leaf module (name as in ``model.named_modules()``)."""

    total: int
    per_module: dict[str, int] = field(default_factory=dict)


def _as_args(example_input: torch.Tensor | tuple) -> tuple:
    return example_input if isinstance(example_input, tuple) else (example_input,)


def count_macs(model: nn.Module, example_input: torch.Tensor | tuple) -> MacCount:
    """Count the MACs of one forward pass on ``example_input`` (batch 1 by convention)."""
    was_training = model.training
    model.eval()
    try:
        # The math attention path: FlopCounterMode has no formula for the CPU flash-attention
        # kernel, so without it attention's products would count on the meta device and on a GPU
        # but not on a CPU.
        with (
            torch.no_grad(),
            sdpa_kernel(SDPBackend.MATH),
            FlopCounterMode(display=False) as counter,
        ):
            model(*_as_args(example_input))
    finally:
        model.train(was_training)
    root = type(model).__name__
    leaves = {name for name, m in model.named_modules() if not list(m.children())}
    per_module: dict[str, int] = {}
    for key, ops in counter.get_flop_counts().items():
        name = key[len(root) + 1 :] if key.startswith(root + ".") else key
        if name in leaves:
            per_module[name] = sum(ops.values()) // 2
    return MacCount(total=counter.get_total_flops() // 2, per_module=per_module)


def count_params(model: nn.Module) -> int:
    """Every trainable parameter, BN affine included."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops_from_macs(macs: int) -> int:
    """Convert to the FLOPs convention some papers use: FLOPs are twice the MACs."""
    return 2 * macs


@torch.no_grad()
def paired_times_ms(
    models: dict[str, nn.Module],
    example_batch: torch.Tensor,
    repeats: int = 20,
    warmup: int = 5,
    bf16: bool = False,
) -> dict[str, list[float]]:
    """Wall time of one forward pass per model and round, in milliseconds, on the input's
    device, with the models' passes interleaved (the order flips every round); ``bf16`` runs
    them under bf16 autocast.

    Timing models one after the other favours the later ones: on a 16-thread host the model
    measured first came out 10–25 % slower than an identical copy measured second. Interleaving
    exposes every model to the same machine state, so per-round ratios are fair.
    """
    states = {name: m.training for name, m in models.items()}
    sync = torch.cuda.synchronize if example_batch.is_cuda else (lambda: None)
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    autocast = torch.autocast(example_batch.device.type, torch.bfloat16, enabled=bf16)
    try:
        with autocast:
            for m in models.values():
                m.eval()
                for _ in range(warmup):
                    m(example_batch)
            sync()
            for i in range(repeats):
                for name in names if i % 2 == 0 else names[::-1]:
                    start = time.perf_counter()
                    models[name](example_batch)
                    sync()
                    times[name].append((time.perf_counter() - start) * 1e3)
    finally:
        for name, m in models.items():
            m.train(states[name])
    return times


def measure_latency_paired(
    models: dict[str, nn.Module], example_batch: torch.Tensor, repeats: int = 20, warmup: int = 5
) -> dict[str, dict[str, float]]:
    """Median (and min/max) wall time of one forward pass per model, in milliseconds, timed
    interleaved (:func:`paired_times_ms`), so the ratio of medians is fair."""
    times = paired_times_ms(models, example_batch, repeats, warmup)
    return {
        name: {
            "median_ms": statistics.median(t),
            "min_ms": min(t),
            "max_ms": max(t),
            "repeats": repeats,
        }
        for name, t in times.items()
    }


def measure_latency_ms(
    model: nn.Module, example_batch: torch.Tensor, repeats: int = 20, warmup: int = 5
) -> dict[str, float]:
    """Median (and min/max) wall time of one forward pass, in milliseconds, on the input's device."""
    return measure_latency_paired({"model": model}, example_batch, repeats, warmup)["model"]


# When a speed-up is noise (prunebench's own rule, not from a paper): the dense model timed
# against an identical copy of itself must come out within SELF_TOLERANCE of 1, and the
# interquartile range of the per-round ratios dense/compressed must be within SPREAD_TOLERANCE
# of their median; fewer than MIN_REPEATS rounds cannot show either.
SELF_TOLERANCE = 0.10
SPREAD_TOLERANCE = 0.20
MIN_REPEATS = 5


def quartiles(values: list[float]) -> tuple[float, float]:
    """The first and third quartiles (inclusive method; one value: itself twice)."""
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def trust(self_ratio: float, ratios: list[float]) -> tuple[bool, str | None]:
    """Whether a speed-up measured as per-round ``ratios`` (dense / compressed), with the dense
    model's ratio against its own copy ``self_ratio``, is a measurement or noise (and why)."""
    if len(ratios) < MIN_REPEATS:
        return False, f"{len(ratios)} repeats < {MIN_REPEATS}: no spread to judge by"
    if abs(self_ratio - 1.0) > SELF_TOLERANCE:
        return False, f"dense vs itself ×{self_ratio:.2f} (beyond 1 ± {SELF_TOLERANCE})"
    q1, q3 = quartiles(ratios)
    mid = statistics.median(ratios)
    if (q3 - q1) / mid > SPREAD_TOLERANCE:
        return False, f"ratio IQR {q1:.2f}–{q3:.2f} wider than {SPREAD_TOLERANCE:.0%} of ×{mid:.2f}"
    return True, None


def _paired_speedup(dense: nn.Module, compressed: nn.Module, batch, repeats, warmup, bf16):
    models = {"dense": dense, "dense_copy": copy.deepcopy(dense), "compressed": compressed}
    t = paired_times_ms(models, batch, repeats, warmup, bf16)
    dense_ms, comp_ms = statistics.median(t["dense"]), statistics.median(t["compressed"])
    self_ratio = dense_ms / statistics.median(t["dense_copy"])
    ratios = [d / c for d, c in zip(t["dense"], t["compressed"], strict=True)]
    ok, why = trust(self_ratio, ratios)
    q1, q3 = quartiles(ratios)
    return {
        "dense_median_ms": dense_ms,
        "compressed_median_ms": comp_ms,
        "speedup": dense_ms / comp_ms,
        "speedup_iqr": [q1, q3],
        "self_ratio": self_ratio,
        "trustworthy": ok,
        "untrusted_reason": why,
    }


def latency_entry(
    dense: nn.Module, compressed: nn.Module, batch: torch.Tensor, repeats: int, warmup: int
) -> dict:
    """The record's ``latency`` field: the fp32 models (as deployed) timed interleaved on the
    CPU at ``batch`` with a copy of the dense model as a control, and, on a CPU with bf16
    matrix instructions, the same under bf16 autocast (``bf16``; None elsewhere).

    ``speedup`` is the ratio of median times; ``speedup_iqr`` the interquartile range of the
    per-round ratios; ``trustworthy`` is False (``untrusted_reason`` says why) when the dense
    model against its own copy or the spread says the figure is noise (:func:`trust`)."""
    from prunebench.running.precision import cpu_has_bf16  # noqa: PLC0415 (measure stays import-light)

    entry = {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "order": "interleaved",
        "batch": int(batch.shape[0]),
        "repeats": repeats,
        **_paired_speedup(dense, compressed, batch, repeats, warmup, bf16=False),
    }
    bf16 = None
    if cpu_has_bf16():
        bf16 = _paired_speedup(dense, compressed, batch, repeats, warmup, bf16=True)
    return {**entry, "bf16": bf16}
