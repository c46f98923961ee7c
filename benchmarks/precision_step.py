"""Training-step throughput of CIFAR ResNet-20 in fp32 and bf16 autocast, each with and without
channels_last, on the CPU: the evidence behind ``trainer.precision: auto``.

One SGD step (forward, cross-entropy, backward, update) at ``--batch`` on random data; the
variants run interleaved, one step each per round with the order reversed every other round,
so every variant sees the same machine state. Per variant: the median step time; per variant
against fp32: the median and interquartile range of the per-round ratios (fp32 time / variant
time, > 1 is faster). Whether this CPU multiplies bf16 natively (``prunebench.running.precision``) is
part of the output: without AMX-BF16 / AVX512-BF16 bf16 runs emulated and the ratio says so.

    python benchmarks/precision_step.py --rounds 30 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
from _common import interleaved, task_from_conf, timed_sgd_step, write_json

from prunebench.running.precision import cpu_has_bf16
from prunebench.surgery.measure import quartiles

VARIANTS = {  # name: (bf16 autocast, channels_last)
    "fp32": (False, False),
    "fp32_channels_last": (False, True),
    "bf16": (True, False),
    "bf16_channels_last": (True, True),
}


def step_fn(model, bf16: bool, channels_last: bool, batch: int):
    """One SGD step of ``model`` (its own copy and optimiser) on a fixed random batch."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = copy.deepcopy(model).to(memory_format=fmt).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), generator=g)
    return timed_sgd_step(model, x, y, bf16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/benchmarks/precision_step.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = task_from_conf("cifar10_resnet20").build_model()
    steps = {name: step_fn(model, *flags, args.batch) for name, flags in VARIANTS.items()}
    times = interleaved(steps, args.rounds, args.warmup)
    names = list(steps)
    results = {}
    for name in names:
        ratios = [f / t for f, t in zip(times["fp32"], times[name], strict=True)]
        q1, q3 = quartiles(ratios)
        med = statistics.median(times[name])
        results[name] = {
            "median_step_ms": 1e3 * med,
            "images_per_s": args.batch / med,
            "ratio_vs_fp32": statistics.median(ratios),
            "ratio_iqr": [q1, q3],
        }
        print(
            f"{name:20} {1e3 * med:8.1f} ms/step  {args.batch / med:7.1f} img/s  "
            f"×{statistics.median(ratios):.2f} vs fp32 (IQR {q1:.2f}–{q3:.2f})"
        )
    native = cpu_has_bf16()
    print(f"bf16 matrix instructions on this CPU: {native}" + ("" if native else " (emulated)"))
    settings = {"model": "cifar10_resnet20", **vars(args)}
    write_json(args.out, settings, cpu_bf16_native=native, variants=results)


if __name__ == "__main__":
    main()
