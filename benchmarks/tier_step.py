"""Size a tier: the training-step time of several tasks' models, side by side, at the batch and
input their ``cpu`` tier trains at (``Task.training_input`` for the data source), in the
precision ``trainer.precision: auto`` picks on this CPU. A new tier's baseline cost is then
predicted from a measured one: ratio × the measured task's baseline stage.

The tasks run interleaved, one step each per round with the order reversed every other round,
so all see the same machine state (a loaded machine moves the absolute times, not the ratios).
Per task: the median step time and, against the first task, the median and interquartile range
of the per-round ratios (task time / first task's time, > 1 is slower).

    python benchmarks/tier_step.py imagenet_resnet18 imagenet_resnet50 --batch 32 --rounds 20
"""

from __future__ import annotations

import statistics

import torch
from _common import interleaved, step_parser, task_from_conf, timed_sgd_step, write_json

from prunebench.running.precision import cpu_has_bf16
from prunebench.surgery.measure import quartiles


def step_fn(task_name: str, batch: int, source: str, bf16: bool):
    """One SGD step of ``task_name``'s model on a fixed batch of its training input."""
    task = task_from_conf(task_name)
    torch.manual_seed(0)
    model = task.build_model().train()
    x = task.training_input(batch, source)
    y = torch.randint(0, getattr(task, "num_classes", 10), (batch,))
    return timed_sgd_step(model, x, y, bf16), tuple(x.shape)


def main(argv: list[str] | None = None) -> dict:
    ap = step_parser(
        __doc__, "results/benchmarks/tier_step.json", 20, 2, "classification task configs"
    )
    ap.add_argument("--source", default="embedded", choices=["embedded", "disk"])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    bf16 = cpu_has_bf16()
    steps, shapes = {}, {}
    for name in args.tasks:
        steps[name], shapes[name] = step_fn(name, args.batch, args.source, bf16)
    times = interleaved(steps, args.rounds, args.warmup)
    names = list(steps)
    first = names[0]
    results = {}
    for name in names:
        ratios = [t / f for t, f in zip(times[name], times[first], strict=True)]
        q1, q3 = quartiles(ratios)
        med = statistics.median(times[name])
        results[name] = {
            "input_shape": list(shapes[name]),
            "median_step_ms": 1e3 * med,
            "images_per_s": args.batch / med,
            "ratio_vs_first": statistics.median(ratios),
            "ratio_iqr": [q1, q3],
        }
        print(
            f"{name:24} {str(shapes[name]):20} {1e3 * med:8.1f} ms/step  "
            f"×{statistics.median(ratios):.2f} of {first} (IQR {q1:.2f}–{q3:.2f})"
        )
    print(f"precision: {'bf16 autocast' if bf16 else 'fp32'} (what trainer.precision=auto picks)")
    settings = {**vars(args), "bf16": bf16}
    write_json(args.out, settings, tasks=results)
    return results


if __name__ == "__main__":
    main()
