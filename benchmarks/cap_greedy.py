"""Time of CaP's statistics pass and greedy channel ranking on CIFAR ResNet-56.

The 27 consumer convs (each block's conv2) get their input statistics from one no-grad pass over
``--samples`` images (float64 accumulation of unfolded inputs), then the greedy forward selection
(all candidates scored at once per step, Schur-complement update) ranks every layer's channels.
A per-candidate loop (the authors' form: one small solve per candidate and step) is timed on the
largest layer for comparison. Writes ``results/benchmarks/cap_greedy.json``.

    python benchmarks/cap_greedy.py [--samples 500] [--depth 56]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from methods.cap_compensation import (
    InputStats,
    collect_input_stats,
    greedy_rank,
    kernel_numel,
    weight_matrix,
)
from prunebench.reporting.records import write_atomic
from tests.test_slim import _trained_like


def loop_rank(w: torch.Tensor, stats: InputStats, ks: int) -> list[int]:
    """Greedy selection with a Python loop over candidates (for the speed comparison only)."""
    cond, w = stats.sigma.clone(), w.double()
    c = cond.shape[0] // ks
    r, order, left = w @ cond, [], list(range(c))
    tol = 1e-12 * float(cond.diagonal().abs().max())
    while left:
        best, best_gain = None, -1.0
        for t in left:
            cols = slice(t * ks, (t + 1) * ks)
            t_inv = torch.linalg.pinv(cond[cols, cols], atol=tol, rtol=0.0, hermitian=True)
            gain = float(((r[:, cols] @ t_inv) * r[:, cols]).sum())
            if gain > best_gain:
                best, best_gain = t, gain
        cols = slice(best * ks, (best + 1) * ks)
        update = torch.linalg.pinv(cond[cols, cols], atol=tol, rtol=0.0, hermitian=True)
        update = update @ cond[cols]
        r -= r[:, cols] @ update
        cond -= cond[:, cols] @ update
        left.remove(best)
        order.append(best)
    return order


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--depth", type=int, default=56)
    p.add_argument("--out", default="results/benchmarks/cap_greedy.json")
    args = p.parse_args()
    model = _trained_like(args.depth)
    x = torch.randn(args.samples, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    layers = [n for n, _ in model.named_modules() if n.startswith("layer") and n.endswith("conv2")]
    start = time.perf_counter()
    stats = collect_input_stats(model, layers, [(b,) for b in x.split(128)])
    stats_s = time.perf_counter() - start
    per_layer = {}
    for name in layers:
        m = model.get_submodule(name)
        start = time.perf_counter()
        greedy_rank(weight_matrix(m), stats[name], kernel_numel(m))
        per_layer[name] = time.perf_counter() - start
    big = layers[-1]
    m = model.get_submodule(big)
    start = time.perf_counter()
    slow = loop_rank(weight_matrix(m), stats[big], kernel_numel(m))
    loop_s = time.perf_counter() - start
    assert slow == greedy_rank(weight_matrix(m), stats[big], kernel_numel(m))
    out = {
        "model": f"CIFAR ResNet-{args.depth}",
        "samples": args.samples,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "statistics_pass_s": round(stats_s, 3),
        "greedy_total_s": round(sum(per_layer.values()), 3),
        "greedy_largest_layer_s": round(per_layer[big], 4),
        "loop_over_candidates_largest_layer_s": round(loop_s, 4),
        "vectorised_speedup_largest_layer": round(loop_s / per_layer[big], 1),
    }
    print(json.dumps(out, indent=1))
    write_atomic(args.out, json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
