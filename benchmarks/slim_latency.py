"""Does slimming turn MACs into time? CPU latency of dense vs magnitude-slimmed CIFAR ResNets.

Dense and slimmed forward passes are timed alternately (A B A B …) so machine drift hits both;
the ratio is taken pair by pair and its median printed. ``--engine torch ort`` (default) also
times the same two models exported to ONNX and run by onnxruntime, so a speed-up is not an
artefact of eager PyTorch. Writes ``results/benchmarks/slim_latency.json``.

    python benchmarks/slim_latency.py [--batch 64] [--pairs 30] [--reduction 0.5] [--engine torch ort]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from methods.magnitude import Magnitude
from prunebench.method import CompressContext
from prunebench.reporting.records import write_atomic
from prunebench.surgery.measure import count_macs
from prunebench.surgery.slim import slim
from tasks.classification.resnet_cifar import CifarResNet


@torch.no_grad()
def _time_ms(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return (time.perf_counter() - start) * 1e3


def bench(depth: int, batch: int, pairs: int, reduction: float, engine: str = "torch") -> dict:
    torch.manual_seed(0)
    dense = CifarResNet(depth).eval()
    x1 = torch.zeros(1, 3, 32, 32)
    roots = [n for n, _ in dense.named_modules() if n.startswith("layer") and n.endswith(".conv1")]
    ctx = CompressContext.build(dense, x1, roots, ["conv1", "fc"], reduction)
    slimmed = slim(dense, Magnitude("uniform").compress(ctx), x1, ctx.structure).eval()
    macs_d, macs_s = count_macs(dense, x1).total, count_macs(slimmed, x1).total
    x = torch.randn(batch, 3, 32, 32)
    if engine == "ort":  # the same two models, exported and run by onnxruntime
        from prunebench.surgery.export import OrtModule, export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            dense = OrtModule(export_onnx(dense, x[:2], Path(tmp) / "dense.onnx"))
            slimmed = OrtModule(export_onnx(slimmed, x[:2], Path(tmp) / "slim.onnx"))
    for _ in range(5):
        _time_ms(dense, x), _time_ms(slimmed, x)
    a, b = [], []
    for _ in range(pairs):
        a.append(_time_ms(dense, x))
        b.append(_time_ms(slimmed, x))
    return {
        "model": f"cifar_resnet{depth}",
        "engine": engine,
        "batch": batch,
        "pairs": pairs,
        "macs_dense": macs_d,
        "macs_slimmed": macs_s,
        "macs_reduction": 1 - macs_s / macs_d,
        "dense_median_ms": statistics.median(a),
        "slimmed_median_ms": statistics.median(b),
        "speedup_median_of_pair_ratios": statistics.median(
            x / y for x, y in zip(a, b, strict=True)
        ),
        "speedup_ideal": macs_d / macs_s,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--pairs", type=int, default=30)
    p.add_argument("--reduction", type=float, default=0.5)
    p.add_argument("--engine", nargs="+", default=["torch", "ort"], choices=["torch", "ort"])
    p.add_argument("--out", default="results/benchmarks/slim_latency.json")
    args = p.parse_args()
    rows = [
        bench(d, args.batch, args.pairs, args.reduction, e) for e in args.engine for d in (20, 56)
    ]
    print(
        f"CPU latency, batch {args.batch}, {torch.get_num_threads()} threads, {args.pairs} alternating pairs"
    )
    print(
        f"{'engine':8}{'model':16}{'MACs −%':>9}{'dense ms':>10}{'slim ms':>10}{'speed-up':>10}{'ideal':>8}"
    )
    for r in rows:
        print(
            f"{r['engine']:8}{r['model']:16}{100 * r['macs_reduction']:>9.1f}{r['dense_median_ms']:>10.2f}"
            f"{r['slimmed_median_ms']:>10.2f}{r['speedup_median_of_pair_ratios']:>9.2f}×{r['speedup_ideal']:>7.2f}×"
        )
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    write_atomic(args.out, json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
