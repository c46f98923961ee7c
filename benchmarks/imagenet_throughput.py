"""ImageNet-shaped throughput: can a GPU box keep ResNet-50 fed?

Two figures, side by side:

1. the model alone — training steps (forward, backward, SGD step) and evaluation passes per
   second on synthetic 224-px batches already on the device, fp32 and bf16 autocast, channels_last;
2. the data pipeline alone — images per second that the ImageNet task's own train loader
   (``imagefolder_splits``: JPEG decode + RandomResizedCrop 224 + flip + normalise, torchvision's
   reference transforms) delivers with ``--workers`` processes, on a generated ImageFolder tree
   of ``--images`` JPEGs at ImageNet's typical 500×375.

If (2) is below (1) the loader is the bottleneck. Writes ``results/benchmarks/imagenet_throughput.json``.

    python benchmarks/imagenet_throughput.py [--arch resnet50] [--batch 256] [--workers 16]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from prunebench.reporting.records import write_atomic
from tasks.classification.imagefolder import imagefolder_splits
from tasks.classification.imagenet import ARCHS


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def model_throughput(arch: str, batch: int, dtype: str, device: torch.device, steps: int) -> dict:
    """Median images/s of training steps and of evaluation passes."""
    model = ARCHS[arch][0](weights=None).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, 224, 224, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def train_step() -> None:
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def eval_step() -> None:
        with autocast:
            model(x)

    out = {}
    for name, step, mode in (("train", train_step, True), ("eval", eval_step, False)):
        model.train(mode)
        for _ in range(3):
            step()
        _sync(device)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - start)
        out[f"{name}_images_per_s"] = batch / statistics.median(times)
    if device.type == "cuda":
        out["max_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    return out


def loader_throughput(n_images: int, workers: int, batch: int) -> dict:
    """Images/s of the task's own train split through a DataLoader over a generated tree."""
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        classes = [f"n{c:08d}" for c in range(10)]
        for split, n in (("train", n_images), ("val", 10)):
            for i in range(n):
                folder = Path(tmp) / split / classes[i % len(classes)]
                folder.mkdir(parents=True, exist_ok=True)
                px = rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)
                Image.fromarray(px).save(folder / f"{i}.JPEG", quality=90)
        sizes = {"train": None, "val": None, "test": None}
        train, _, _ = imagefolder_splits(tmp, sizes, 1000, val_per_class=1)
        loader = torch.utils.data.DataLoader(
            train,
            batch,
            shuffle=True,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
            drop_last=True,
        )
        for _epoch in range(2):  # the first epoch starts the workers
            start, seen = time.perf_counter(), 0
            for xb, _ in loader:
                seen += len(xb)
            rate = seen / (time.perf_counter() - start)
        return {"images_per_s": rate, "workers": workers, "images": len(train)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="resnet50", choices=sorted(ARCHS))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--out", default="results/benchmarks/imagenet_throughput.json")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "arch": args.arch,
        "batch": args.batch,
        "model": {
            dt: model_throughput(args.arch, args.batch, dt, device, args.steps)
            for dt in ("fp32", "bf16")
        },
        "loader": loader_throughput(args.images, args.workers, args.batch),
    }
    for dt, r in result["model"].items():
        print(
            f"{args.arch} {dt}: train {r['train_images_per_s']:.0f} img/s, "
            f"eval {r['eval_images_per_s']:.0f} img/s"
        )
    ld = result["loader"]
    print(f"train loader, {ld['workers']} workers: {ld['images_per_s']:.0f} img/s")
    print(
        "loader / bf16 training step: "
        f"{ld['images_per_s'] / result['model']['bf16']['train_images_per_s']:.2f}"
    )
    write_atomic(Path(args.out), (json.dumps(result, indent=2) + "\n").encode())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
