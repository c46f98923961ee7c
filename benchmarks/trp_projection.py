"""TRP's per-step projection, LAPACK SVD (``method.svd=direct``) against the Gram
eigendecomposition (``method.svd=gram``), beside the task's dense training step.

TRP projects every selected conv onto its energy-0.9 rank before every step (period 1). On a
wide 512 × 4,608 matrix (ResNet-18/50's last stage) the SVD costs far more than the step itself on
a CPU. Per task: the dense SGD step at its ``cpu`` tier input (batch 32, the precision ``auto``
picks), the projection of all TRP layers with each solver, timed interleaved (order reversed every
other round), medians; the solver ratio (direct ÷ gram) and what a TRP step costs over the dense
one with each (1 + projection ÷ step). Agreement: the largest norm-relative difference between
the two solvers' projected weights.

    python benchmarks/trp_projection.py imagenet_resnet18 imagenet_resnet50 cifar10_resnet56
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from _common import (
    interleaved,
    step_parser,
    task_context,
    task_from_conf,
    timed_sgd_step,
    write_json,
)

from methods.trp import TRP
from prunebench.running.precision import cpu_has_bf16


def timers(task_name: str, batch: int, bf16: bool) -> tuple[dict, float, int]:
    """(timed functions: dense step and both projections, solver disagreement, TRP layers)."""
    task = task_from_conf(task_name)
    torch.manual_seed(0)
    model = task.build_model().train()
    x = task.training_input(batch, "embedded")
    y = torch.randint(0, getattr(task, "num_classes", 10), (batch,))
    ctx = task_context(task, model, 0.5)  # the layers' names: the copies share them
    layers = TRP().layers(ctx)
    copies = {svd: copy.deepcopy(model) for svd in ("direct", "gram")}
    hooks = {svd: TRP(svd=svd).hooks(ctx) for svd in copies}

    def projection(svd: str):
        def run() -> float:
            start = time.perf_counter()
            hooks[svd].batch_start(copies[svd], 0)
            return time.perf_counter() - start

        return run

    for svd in copies:  # one projection from the same weights: how far apart the solvers land
        projection(svd)()
    weights = {
        svd: {n: m.get_submodule(n).weight.detach() for n in layers} for svd, m in copies.items()
    }
    diff = max(
        float((weights["direct"][n] - weights["gram"][n]).norm() / weights["direct"][n].norm())
        for n in layers
    )
    steps = {
        "dense_step": timed_sgd_step(model, x, y, bf16),
        "project_direct": projection("direct"),
        "project_gram": projection("gram"),
    }
    return steps, diff, len(layers)


def main(argv: list[str] | None = None) -> dict:
    ap = step_parser(__doc__, "results/benchmarks/trp_projection.json", 10, 1, "task configs")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    bf16 = cpu_has_bf16()
    results = {}
    for name in args.tasks:
        steps, diff, n_layers = timers(name, args.batch, bf16)
        times = interleaved(steps, args.rounds, args.warmup)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratios = [
            d / g for d, g in zip(times["project_direct"], times["project_gram"], strict=True)
        ]
        row = {
            "trp_layers": n_layers,
            "median_ms": {k: 1e3 * v for k, v in med.items()},
            "solver_ratio_direct_over_gram": statistics.median(ratios),
            "trp_step_over_dense_direct": 1 + med["project_direct"] / med["dense_step"],
            "trp_step_over_dense_gram": 1 + med["project_gram"] / med["dense_step"],
            "max_relative_weight_difference": diff,
        }
        results[name] = row
        print(
            f"{name:20} {n_layers:2} layers  step {1e3 * med['dense_step']:7.0f} ms  projection "
            f"direct {1e3 * med['project_direct']:7.0f} ms, gram {1e3 * med['project_gram']:6.0f} ms "
            f"(×{row['solver_ratio_direct_over_gram']:.1f})  TRP step ×"
            f"{row['trp_step_over_dense_direct']:.2f} → ×{row['trp_step_over_dense_gram']:.2f} "
            f"of dense  weights differ ≤ {diff:.1e}"
        )
    settings = {**vars(args), "bf16": bf16}
    write_json(args.out, settings, tasks=results)
    return results


if __name__ == "__main__":
    main()
