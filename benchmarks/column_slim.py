"""Does column slimming (SPP) turn MACs into time? CPU latency of column-slimmed convs and
networks against the masked dense ones.

Two parts, each timed in alternating pairs (A B A B …) so machine drift hits both, the median of
the pair-by-pair ratios printed:

* layers: one CIFAR-ResNet-shaped 3×3 conv with half its columns (chosen at random) removed —
  the masked dense conv (``F.conv2d`` with zeroed columns: what the masked model computes) vs
  :class:`prunebench.surgery.columns.ColumnConv` (gather the kept columns from the channels-last input,
  one smaller GEMM) vs the ``F.unfold`` + ``index_select`` + matmul alternative. (Also tried on
  ResNet-20, batch 64, 1 thread: gathering from NCHW then a 1×1 conv, 218 ms; then a batched
  matmul, 273 ms; channels-last gather + one GEMM, 109 ms; dense 66 ms.)
* networks: CIFAR ResNet-20/56 with a column plan at ``--reduction`` of the MACs (lowest column
  L1, uniform per layer, the plan SPP's solver would start from), masked vs slimmed.

Writes ``results/benchmarks/column_slim.json``.

    python benchmarks/column_slim.py [--batch 64] [--pairs 20] [--reduction 0.5]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.method import CompressContext
from prunebench.reporting.records import write_atomic
from prunebench.surgery.columns import ColumnConv
from prunebench.surgery.masks import apply_masks, remove_masks
from prunebench.surgery.measure import count_macs
from prunebench.surgery.slim import slim
from tasks.classification.resnet_cifar import CifarResNet


class UnfoldColumns(nn.Module):
    """The alternative: im2col of every column, then keep the kept rows, then a matmul."""

    def __init__(self, conv: nn.Conv2d, keep: torch.Tensor) -> None:
        super().__init__()
        self.conv = conv
        self.idx = torch.nonzero(keep.flatten()).flatten()
        self.w = conv.weight.detach().flatten(1)[:, self.idx].clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        cols = F.unfold(x, c.kernel_size, c.dilation, c.padding, c.stride).index_select(1, self.idx)
        h = (x.shape[2] + 2 * c.padding[0] - c.kernel_size[0]) // c.stride[0] + 1
        w = (x.shape[3] + 2 * c.padding[1] - c.kernel_size[1]) // c.stride[1] + 1
        return torch.matmul(self.w, cols).view(x.shape[0], -1, h, w)


@torch.no_grad()
def _time_ms(model: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return (time.perf_counter() - start) * 1e3


def _paired(models: dict[str, nn.Module], x: torch.Tensor, pairs: int) -> dict[str, list[float]]:
    for _ in range(3):
        for m in models.values():
            _time_ms(m, x)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(pairs):
        for k, m in models.items():
            times[k].append(_time_ms(m, x))
    return times


def _ratio(a: list[float], b: list[float]) -> float:
    """Median of the pair-by-pair speed-ups a/b (> 1: b is faster)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def bench_layer(c: int, size: int, batch: int, pairs: int, fraction: float) -> dict:
    torch.manual_seed(0)
    conv = nn.Conv2d(c, c, 3, padding=1, bias=False).eval()
    keep = torch.zeros(c * 9, dtype=torch.bool)
    keep[torch.randperm(c * 9)[: round((1 - fraction) * c * 9)]] = True
    keep = keep.view(c, 3, 3)
    masked = copy.deepcopy(conv)
    masked.weight.data *= keep
    models = {
        "masked": masked,
        "column": ColumnConv(conv, keep).eval(),
        "unfold": UnfoldColumns(conv, keep),
    }
    t = _paired(models, torch.randn(batch, c, size, size), pairs)
    return {
        "layer": f"conv3x3 {c}→{c} @ {size}×{size}",
        "columns_removed": fraction,
        **{f"{k}_median_ms": statistics.median(v) for k, v in t.items()},
        "speedup_column": _ratio(t["masked"], t["column"]),
        "speedup_unfold": _ratio(t["masked"], t["unfold"]),
    }


def bench_net(depth: int, batch: int, pairs: int, reduction: float) -> dict:
    torch.manual_seed(0)
    dense = CifarResNet(depth).eval()
    x1 = torch.zeros(1, 3, 32, 32)
    roots = [n for n, _ in dense.named_modules() if n.startswith("layer") and n.endswith(".conv1")]
    ctx = CompressContext.build(dense, x1, roots, ["conv1", "fc"], reduction)
    plan = ctx.solve_columns({n: w.abs().sum(0) for n, w in ctx.kernel_weights().items()})
    masked = remove_masks(apply_masks(copy.deepcopy(dense), plan, ctx.structure), bake=True)
    slimmed = slim(dense, plan, x1, ctx.structure).eval()
    t = _paired(
        {"dense": dense, "masked": masked.eval(), "column": slimmed},
        torch.randn(batch, 3, 32, 32),
        pairs,
    )
    macs_d, macs_s = count_macs(dense, x1).total, count_macs(slimmed, x1).total
    return {
        "model": f"cifar_resnet{depth}",
        "macs_reduction": 1 - macs_s / macs_d,
        **{f"{k}_median_ms": statistics.median(v) for k, v in t.items()},
        "speedup_vs_masked": _ratio(t["masked"], t["column"]),
        "speedup_vs_dense": _ratio(t["dense"], t["column"]),
        "speedup_ideal": macs_d / macs_s,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--reduction", type=float, default=0.5)
    p.add_argument("--out", default="results/benchmarks/column_slim.json")
    args = p.parse_args()
    print(f"CPU, batch {args.batch}, {torch.get_num_threads()} threads, {args.pairs} pairs")
    layers = [
        bench_layer(c, s, args.batch, args.pairs, 0.5) for c, s in ((16, 32), (32, 16), (64, 8))
    ]
    print(
        f"{'layer (½ columns)':26}{'masked ms':>10}{'column ms':>10}{'unfold ms':>10}{'×column':>9}{'×unfold':>9}"
    )
    for r in layers:
        print(
            f"{r['layer']:26}{r['masked_median_ms']:>10.2f}{r['column_median_ms']:>10.2f}"
            f"{r['unfold_median_ms']:>10.2f}{r['speedup_column']:>9.2f}{r['speedup_unfold']:>9.2f}"
        )
    nets = [bench_net(d, args.batch, args.pairs, args.reduction) for d in (20, 56)]
    print(
        f"{'model':16}{'MACs −%':>8}{'dense ms':>10}{'masked ms':>10}{'column ms':>10}{'×masked':>9}{'ideal':>7}"
    )
    for r in nets:
        print(
            f"{r['model']:16}{100 * r['macs_reduction']:>8.1f}{r['dense_median_ms']:>10.2f}"
            f"{r['masked_median_ms']:>10.2f}{r['column_median_ms']:>10.2f}"
            f"{r['speedup_vs_masked']:>9.2f}{r['speedup_ideal']:>7.2f}"
        )
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "batch": args.batch,
    }
    write_atomic(args.out, json.dumps({"meta": meta, "layers": layers, "networks": nets}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
