"""MACs, parameters and latency, under one convention (DESIGN.md §4).

MACs are multiply-accumulates of conv and linear layers at batch 1, counted by
``torch.utils.flop_counter.FlopCounterMode`` (aten-level FLOPs ÷ 2); bias, BN, activations and
pooling are not counted, and a module called twice counts twice. Attention's two products
(``scaled_dot_product_attention``, inside a parent module) are counted too, on every device. Count a masked model through its
slimmed copy (``prunebench.slim.slim``): only surviving structure counts.
"""

from __future__ import annotations

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
def measure_latency_paired(
    models: dict[str, nn.Module], example_batch: torch.Tensor, repeats: int = 20, warmup: int = 5
) -> dict[str, dict[str, float]]:
    """Median (and min/max) wall time of one forward pass per model, in milliseconds, on the
    input's device, with the models' passes interleaved (the order flips every round).

    Timing models one after the other favours the later ones: on a 16-thread host the model
    measured first came out 10–25 % slower than an identical copy measured second. Interleaving
    exposes every model to the same machine state, so the ratio of medians is fair.
    """
    states = {name: m.training for name, m in models.items()}
    sync = torch.cuda.synchronize if example_batch.is_cuda else (lambda: None)
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    try:
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


def latency_entry(
    dense: nn.Module, compressed: nn.Module, batch: torch.Tensor, repeats: int, warmup: int
) -> dict:
    """The record's ``latency`` field: both models timed interleaved on the CPU at ``batch``."""
    ms = measure_latency_paired({"dense": dense, "compressed": compressed}, batch, repeats, warmup)
    dense_ms, comp_ms = ms["dense"]["median_ms"], ms["compressed"]["median_ms"]
    return {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "order": "interleaved",
        "batch": int(batch.shape[0]),
        "dense_median_ms": dense_ms,
        "compressed_median_ms": comp_ms,
        "speedup": dense_ms / comp_ms,
    }
