"""Training-step overhead of during-training methods against the dense step, and their memory.

CIFAR ResNet-56, batch 128, CPU, the same loop the LightningModule runs (hooks: batch_start →
forward → backward → before_optimizer_step → SGD step → after_optimizer_step). Dense and method
steps alternate (A B A B …) so machine drift hits both; the median of the pair-by-pair ratios is
printed, and the ratio of means (TRP with period > 1: amortised over whole periods).

LAPP trains a model with bypasses (a 1×1 conv beside every pruned 3×3 conv; in training forwards
folded into the 3×3 kernel, ``prunebench.surgery.bypass``) under its hooks (thresholds in their own
optimiser group, straight-through masks folded into the BNs' γ/β, the MACs term every step). Two
rows separate the two costs: ``lapp_bypass_only`` (the bypassed model, no hooks) and ``lapp``
(bypasses + hooks), both against the plain dense step; the hooks' own overhead is their ratio.

Memory: each row runs in its own process (``--child``: build, then ``--rss-steps`` steps),
beside a dense process and an import-only one: the process's peak RSS (``rusage``; it includes
the set-up, e.g. tracing the structure for the hooks) and the peak during the training steps only
(``_common.PhasePeak``), whose ratio to the dense one is the figure against the ≤ 1.2× goal. Writes
``results/benchmarks/method_overhead.json``.

    python benchmarks/method_overhead.py [--steps 20] [--depth 56] [--batch 128] [--only lapp]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _common import PhasePeak, peak_rss, write_json

from methods.lapp import LAPP
from methods.spp import SPP
from methods.trp import TRP
from prunebench.method import CompressContext, TrainingHooks
from prunebench.running.module import clear_momentum
from tasks.classification.resnet_cifar import CifarResNet

# name → a function building the method's hooks for a context (methods with training-time hooks)
METHODS = {
    "trp_channel_period1": lambda ctx: TRP(scheme="channel", period=1).hooks(ctx),
    "trp_spatial_period1": lambda ctx: TRP(scheme="spatial", period=1).hooks(ctx),
    "trp_channel_period5": lambda ctx: TRP(scheme="channel", period=5).hooks(ctx),
    "spp_element_interval1": lambda ctx: SPP(sampling="element").hooks(ctx),
    "spp_column_interval1": lambda ctx: SPP(sampling="column").hooks(ctx),
    "lapp_bypass_only": None,  # LAPP's bypassed model, no hooks
    "lapp": None,  # bypasses + LAPPHooks
}


def build(name: str, depth: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, TrainingHooks]:
    """Model, SGD optimiser and hooks of one row (``dense``: the plain model, no-op hooks)."""
    torch.manual_seed(0)
    model = CifarResNet(depth)
    roots = [n for n, _ in model.named_modules() if n.startswith("layer") and n.endswith(".conv1")]
    x1 = torch.zeros(1, 3, 32, 32)
    hooks, groups = TrainingHooks(), []
    if name.startswith("lapp"):
        method = LAPP()
        roots = method.prepare(model, roots)  # bypasses before tracing, as the pipeline does
        if name == "lapp":
            ctx = CompressContext.build(model, x1, roots, ["conv1", "fc"], 0.5, compress_epochs=1)
            hooks = method.hooks(ctx)
            hooks.install(model)
            groups = hooks.param_groups()
    elif name != "dense":
        ctx = CompressContext.build(model, x1, roots, ["conv1", "fc"], 0.5)
        hooks = METHODS[name](ctx)
    opt = torch.optim.SGD([{"params": list(model.parameters())}, *groups], 0.01, momentum=0.9)
    return model, opt, hooks


def _batch(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)


def _step(model, opt, hooks: TrainingHooks, x, y, step: int) -> float:
    start = time.perf_counter()
    hooks.batch_start(model, step)
    loss = F.cross_entropy(model(x), y)
    extra = hooks.extra_loss(model, step)
    if extra is not None:
        loss = loss + extra
    opt.zero_grad()
    loss.backward()
    hooks.before_optimizer_step(model, step)
    clear_momentum(opt, model, hooks.momentum_masks(model))  # as the LightningModule does
    opt.step()
    hooks.after_optimizer_step(model, step)
    return time.perf_counter() - start


def child(name: str, depth: int, batch: int, steps: int) -> None:
    """One process's worth: build ``name`` (``none``: imports and data only) and train ``steps``."""
    x, y = _batch(batch)
    run = build(name, depth) if name != "none" else None
    with PhasePeak() as peak:
        for s in range(steps if run else 0):
            _step(*run, x, y, s)
    peak.report()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--depth", type=int, default=56)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each model first")
    p.add_argument("--rss-steps", type=int, default=3, help="training steps of each memory process")
    p.add_argument("--out", default="results/benchmarks/method_overhead.json")
    p.add_argument("--only", default="", help="comma-separated method names (default: all)")
    p.add_argument("--memory-only", action="store_true", help="peak RSS only, no step timing")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.depth, args.batch, args.rss_steps)
    x, y = _batch(args.batch)
    names = [n for n in METHODS if not args.only or n in args.only.split(",")]
    unknown = set(args.only.split(",")) - set(METHODS) if args.only else set()
    if unknown:
        raise SystemExit(f"--only {sorted(unknown)}: unknown; choices: {list(METHODS)}")

    def rss(name: str) -> dict[str, float]:
        argv = [__file__, "--child", name, "--depth", str(args.depth), "--batch", str(args.batch)]
        return peak_rss([*argv, "--rss-steps", str(args.rss_steps)])

    rss_none, rss_dense = rss("none"), rss("dense")
    print(
        f"peak RSS: import-only process {rss_none['process_mib']:.0f} MiB; dense process "
        f"{rss_dense['process_mib']:.0f} MiB, its training steps {rss_dense['phase_mib']:.0f} MiB"
    )
    rows = []
    for name in names:
        if args.memory_only:
            peak = rss(name)
            rows.append(
                {
                    "method": name,
                    "peak_rss_process_mib": peak["process_mib"],
                    "peak_rss_training_mib": peak["phase_mib"],
                    "peak_rss_training_ratio": peak["phase_mib"] / rss_dense["phase_mib"],
                    "peak_rss_process_ratio": peak["process_mib"] / rss_dense["process_mib"],
                }
            )
            print(
                f"{name:24} training peak RSS {peak['phase_mib']:.0f} MiB "
                f"(×{rows[-1]['peak_rss_training_ratio']:.2f} dense); process "
                f"{peak['process_mib']:.0f} MiB (×{rows[-1]['peak_rss_process_ratio']:.2f})"
            )
            continue
        runs = [build("dense", args.depth), build(name, args.depth)]
        for s in range(args.warmup):
            for run in runs:
                _step(*run, x, y, s)
        dense, method = [], []
        for s in range(args.steps):
            dense.append(_step(*runs[0], x, y, s))
            method.append(_step(*runs[1], x, y, s))
        for _, _, hooks in runs:
            if hasattr(hooks, "remove"):
                hooks.remove()
        ratio = statistics.median(m / d for m, d in zip(method, dense, strict=True))
        # With period > 1 the per-step ratio is bimodal: amortise with the mean over whole periods.
        amortised = statistics.fmean(method) / statistics.fmean(dense)
        peak = rss(name)
        rows.append(
            {
                "method": name,
                "dense_median_s": statistics.median(dense),
                "method_median_s": statistics.median(method),
                "ratio_median_of_pairs": ratio,
                "ratio_of_means": amortised,
                "steps": args.steps,
                "peak_rss_process_mib": peak["process_mib"],
                "peak_rss_training_mib": peak["phase_mib"],
                "peak_rss_training_ratio": peak["phase_mib"] / rss_dense["phase_mib"],
                "peak_rss_process_ratio": peak["process_mib"] / rss_dense["process_mib"],
            }
        )
        print(
            f"{name:24} dense {statistics.median(dense):.3f} s  method {statistics.median(method):.3f} s"
            f"  median ratio ×{ratio:.3f}  ratio of means ×{amortised:.3f}"
            f"  training peak RSS {peak['phase_mib']:.0f} MiB"
            f" (×{peak['phase_mib'] / rss_dense['phase_mib']:.2f} dense; process"
            f" ×{peak['process_mib'] / rss_dense['process_mib']:.2f})"
        )
    by = {r["method"]: r for r in rows}
    if "lapp" in by and "lapp_bypass_only" in by and not args.memory_only:
        hooks_only = (
            by["lapp"]["ratio_median_of_pairs"] / by["lapp_bypass_only"]["ratio_median_of_pairs"]
        )
        print(f"LAPP: hooks alone ×{hooks_only:.3f} (lapp ÷ lapp_bypass_only, medians of pairs)")
    settings = {
        "model": f"cifar_resnet{args.depth}",
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "rss_steps": args.rss_steps,
        "only": args.only or "all",
        "memory_only": args.memory_only,
    }
    write_json(
        args.out,
        settings,
        rows=rows,
        peak_rss_mib={"imports_only": rss_none, "dense_training": rss_dense},
    )


if __name__ == "__main__":
    main()
