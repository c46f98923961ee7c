"""Training-step overhead of during-training methods against the dense step.

CIFAR ResNet-56, batch 128, CPU, the same loop the LightningModule runs (hooks: batch_start →
forward → backward → before_optimizer_step → SGD step → after_optimizer_step). Dense and method
steps alternate (A B A B …) so machine drift hits both; the median of the pair-by-pair ratios is
printed. Writes ``results/benchmarks/method_overhead.json``.

    python benchmarks/method_overhead.py [--steps 20] [--depth 56] [--batch 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from methods.spp import SPP
from methods.trp import TRP
from prunebench.method import CompressContext, TrainingHooks
from prunebench.records import write_atomic
from tasks.classification.resnet_cifar import CifarResNet

# name → a function building the method's hooks for a context (methods with training-time hooks)
METHODS = {
    "trp_channel_period1": lambda ctx: TRP(scheme="channel", period=1).hooks(ctx),
    "trp_spatial_period1": lambda ctx: TRP(scheme="spatial", period=1).hooks(ctx),
    "trp_channel_period5": lambda ctx: TRP(scheme="channel", period=5).hooks(ctx),
    "spp_element_interval1": lambda ctx: SPP(sampling="element").hooks(ctx),
    "spp_column_interval1": lambda ctx: SPP(sampling="column").hooks(ctx),
}


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
    opt.step()
    hooks.after_optimizer_step(model, step)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--depth", type=int, default=56)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--out", default="results/benchmarks/method_overhead.json")
    p.add_argument("--only", default="", help="comma-separated method names (default: all)")
    args = p.parse_args()
    g = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(args.batch, 3, 32, 32, generator=g),
        torch.randint(0, 10, (args.batch,), generator=g),
    )
    rows = []
    for name, make_hooks in METHODS.items():
        if args.only and name not in args.only.split(","):
            continue
        torch.manual_seed(0)
        models = [CifarResNet(args.depth), CifarResNet(args.depth)]
        roots = [
            n
            for n, _ in models[1].named_modules()
            if n.startswith("layer") and n.endswith(".conv1")
        ]
        ctx = CompressContext.build(
            models[1], torch.zeros(1, 3, 32, 32), roots, ["conv1", "fc"], 0.5
        )
        hooks = [TrainingHooks(), make_hooks(ctx)]
        opts = [torch.optim.SGD(m.parameters(), 0.01, momentum=0.9) for m in models]
        for s in range(3):  # warm-up
            for i in (0, 1):
                _step(models[i], opts[i], hooks[i], x, y, s)
        dense, method = [], []
        for s in range(args.steps):
            dense.append(_step(models[0], opts[0], hooks[0], x, y, s))
            method.append(_step(models[1], opts[1], hooks[1], x, y, s))
        ratio = statistics.median(m / d for m, d in zip(method, dense, strict=True))
        # With period > 1 the per-step ratio is bimodal: amortise with the mean over whole periods.
        amortised = statistics.fmean(method) / statistics.fmean(dense)
        rows.append(
            {
                "method": name,
                "dense_median_s": statistics.median(dense),
                "method_median_s": statistics.median(method),
                "ratio_median_of_pairs": ratio,
                "ratio_of_means": amortised,
                "steps": args.steps,
            }
        )
        print(
            f"{name:24} dense {statistics.median(dense):.3f} s  method {statistics.median(method):.3f} s"
            f"  median ratio ×{ratio:.3f}  ratio of means ×{amortised:.3f}"
        )
    meta = {
        "model": f"cifar_resnet{args.depth}",
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    write_atomic(args.out, json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
