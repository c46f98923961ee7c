"""Paper-tier throughput on the device at hand (a GPU, for the figures that matter): does each
task's training step run at the paper's sizes, how fast in fp32 and bf16, in how much memory,
and does CIFAR's data loader keep up with the step?

1. Per task, built from its config at the ``paper`` sizes with the paper recipe's batch
   (CIFAR ResNet-56 at 128, ImageNet ResNet-50 at 224 px and 256, PSMNet at 256×512 with
   maxdisp 192 and 12, DeepLabV3 at 513 px padded to 520 and 16): the median seconds of a training
   step (forward, the task's own loss, backward, SGD step) on synthetic batches already on the
   device, fp32 and bf16 autocast, as samples/s, with the peak device memory of each.
2. CIFAR's loaders: samples/s that the worker ``DataLoader`` (``--workers`` processes, pinned
   memory, batches copied to the device) and ``data.device_resident``'s ``DeviceLoader`` deliver
   over a 45,000-image split with the training augmentation, beside ResNet-56's bf16 step.

    python benchmarks/paper_throughput.py [--device cuda] [--steps 20] [--workers 8]
        [--out results/benchmarks/paper_throughput.json]
    python benchmarks/paper_throughput.py --quick --device cpu   # tiny sizes: a check it runs
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from _common import task_from_conf, write_json
from torch.utils.data import DataLoader

from prunebench.data import DeviceLoader
from prunebench.sampling import EpochRandomSampler
from tasks.classification.data import ImageTensorDataset

TASKS = ("cifar10_resnet56", "imagenet_resnet50", "stereo_psmnet_sceneflow", "seg_deeplabv3_voc")
QUICK = {  # tiny models for --quick (a check that every path runs, not a figure)
    "imagenet_resnet50": {"input_size": 64},
    "stereo_psmnet_sceneflow": {"tier": "smoke"},
    "seg_deeplabv3_voc": {
        "tier": {"encoder": "resnet18", "output_stride": 16, "input_size": [32, 32]}
    },
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _batch(task, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic training batch of the task's input size, with a target its loss takes."""
    g = torch.Generator().manual_seed(0)
    x = task.training_input(n, "disk")
    h, w = x.shape[-2:]
    if hasattr(task, "maxdisp"):  # stereo: a disparity map inside the valid range
        y = 0.9 * task.maxdisp * torch.rand(n, h, w, generator=g)
    elif x.dim() == 4 and hasattr(task, "crop_size"):  # segmentation: a label per pixel
        y = torch.randint(0, task.num_classes, (n, h, w), generator=g)
    else:
        y = torch.randint(0, task.num_classes, (n,), generator=g)
    return x.to(device), y.to(device)


def step_throughput(task, batch: int, dtype: str, device: torch.device, steps: int) -> dict:
    """Median samples/s of a training step, and the peak device memory (GiB; None on CPU)."""
    model = task.build_model().to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x, y = _batch(task, batch, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(steps + 2):  # two warm-up steps
        _sync(device)
        t = time.perf_counter()
        with autocast:
            loss = task.loss(model(x), (x, y))
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        opt.step()
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    del model, opt
    return {"samples_per_s": batch / statistics.median(times), "peak_gib": peak}


def loader_throughput(n: int, batch: int, workers: int, device: torch.device, batches: int) -> dict:
    """Samples/s delivered on ``device`` by the worker DataLoader and by the DeviceLoader."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    ds = ImageTensorDataset(images, rng.integers(0, 10, n), (0.5,) * 3, (0.25,) * 3, True)
    workers_loader = DataLoader(
        ds,
        batch,
        sampler=EpochRandomSampler(ds, 0),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )
    device_loader = DeviceLoader(ds, batch, 0, True, True, device)
    out = {}
    for name, loader in (("dataloader", workers_loader), ("device_resident", device_loader)):
        it, seen = iter(loader), 0
        next(it)  # start-up (worker processes, the copy to the device) not counted
        _sync(device)
        t = time.perf_counter()
        for _, (x, _y) in zip(range(batches), it, strict=False):
            x = x.to(device, non_blocking=True)
            seen += len(x)
        _sync(device)
        out[name] = {"samples_per_s": seen / (time.perf_counter() - t), "batches": batches}
    out["workers"] = workers
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--quick", action="store_true", help="tiny sizes and batches (a check)")
    p.add_argument("--out", default="results/benchmarks/paper_throughput.json")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    tasks = {}
    for name in args.tasks.split(","):
        task = task_from_conf(name, **(QUICK.get(name, {}) if args.quick else {}))
        batch = 2 if args.quick else int(task.recipe["baseline"].batch_size)
        tasks[name] = {"batch": batch, "input": list(task.training_input(1, "disk").shape[1:])}
        for dtype in ("fp32", "bf16"):
            try:
                tasks[name][dtype] = step_throughput(task, batch, dtype, device, args.steps)
            except torch.OutOfMemoryError as exc:  # a figure too: this batch does not fit
                tasks[name][dtype] = {"error": str(exc).splitlines()[0]}
            if device.type == "cuda":
                torch.cuda.empty_cache()
            print(name, dtype, tasks[name][dtype], flush=True)
    n, batch = (512, 16) if args.quick else (45_000, 128)
    loaders = loader_throughput(n, batch, args.workers, device, 8 if args.quick else 300)
    step = tasks.get("cifar10_resnet56", {}).get("bf16", {}).get("samples_per_s")
    for name in ("dataloader", "device_resident"):
        if step:
            loaders[name]["keeps_up_with_resnet56_bf16"] = loaders[name]["samples_per_s"] >= step
    print("loaders", loaders, flush=True)
    settings = {"device": str(device), "steps": args.steps, "quick": args.quick}
    if device.type == "cuda":
        settings["gpu"] = torch.cuda.get_device_name(device)
    result = {"tasks": tasks, "cifar_loaders": loaders}
    write_json(args.out, settings, **result)
    return result


if __name__ == "__main__":
    main()
