"""How fast the hardware trains a task's model: a measured figure from
``results/benchmarks/*.json`` where one matches the model, batch, precision and device, else a
short timed probe — a few training steps of the task's model on a synthetic batch on this
machine's device, cached under ``paths.cache_dir/throughput/``. Either says where it came from.

Only ``imagenet_throughput.json`` holds absolute throughput of a named device; the CPU timings
beside it (``default_run_time.json``, ``pipeline_time_*.json``) were taken on a loaded shared
machine whose own notes say to quote them as ratios only, so they are not used as rates here.
``method_overhead*.json`` give the ratio of a during-training method's step to the dense one.
"""

from __future__ import annotations

import hashlib
import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from prunebench.reporting.records import write_atomic
from prunebench.running.precision import _on_gpu, is_bf16

BENCHMARKS = Path(__file__).resolve().parents[2] / "results" / "benchmarks"
PROBE_SECONDS = 2.0  # a CPU probe's batch is sized so one step takes about this long
PROBE_MIN_BATCH = 2  # BatchNorm in training needs two samples where it pools to 1×1 (ASPP)
PROBE_FORMAT = 3  # changes when the probe measures differently (the cache is then redone)


@dataclass(frozen=True)
class Throughput:
    """Samples per second of a task's model on one device.

    Attributes:
        train_per_s: training samples (forward, backward, optimiser step) per second.
        eval_per_s: evaluation samples (forward, no gradient) per second.
        device: the device, as torch names it.
        source: where the figures come from, in words.
    """

    train_per_s: float
    eval_per_s: float
    device: str
    source: str


def device_name(trainer: dict[str, Any]) -> str:
    """The device the trainer config trains on here: the GPU's name, or ``cpu (N threads)``."""
    if _on_gpu(trainer) and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def _precision_key(precision: Any) -> str:
    return "bf16" if is_bf16(precision) else "fp32"


def benchmark_figure(
    cfg: dict[str, Any], device: str, bench_dir: Path = BENCHMARKS
) -> Throughput | None:
    """The measured figure of ``imagenet_throughput.json`` when it is about the task's model
    (torchvision ``arch`` at 224 px), batch, precision and ``device``; with ``data=disk`` the
    loader's measured rate (JPEG decoding and augmentation) caps both rates."""
    path = bench_dir / "imagenet_throughput.json"
    task = cfg["task"]
    if not path.exists() or "arch" not in task:
        return None
    fig = json.loads(path.read_text())
    batch = int(task["recipe"]["baseline"]["batch_size"])
    precision = _precision_key(cfg["trainer"]["precision"])
    if (
        fig.get("arch") != task["arch"]
        or int(task.get("input_size", 224)) != 224
        or int(fig.get("batch", 0)) != batch
        or fig.get("device") != device
        or precision not in fig.get("model", {})
    ):
        return None
    model = fig["model"][precision]
    train, evaluate = float(model["train_images_per_s"]), float(model["eval_images_per_s"])
    source = f"{path.name}: {fig['arch']} {precision} batch {batch} on {device}"
    loader = fig.get("loader", {})
    rate = float(loader.get("images_per_s", train))
    if cfg["data"]["source"] == "disk" and rate < train:  # every image is decoded either way
        train, evaluate = rate, min(evaluate, rate)
        source += f", bound by the JPEG loader it measured ({loader['workers']} workers)"
    return Throughput(train, evaluate, device, source)


def overhead_row(method: dict[str, Any]) -> str | None:
    """The row of ``benchmarks/method_overhead.py`` that measured this method's options."""
    name = method["name"]
    if name == "trp":
        return f"trp_{method['scheme']}_period{method['period']}"
    if name == "spp":
        return f"spp_{method['sampling']}_interval{method['prune_interval']}"
    if name == "lapp":
        return "lapp" if method.get("bypass", "conv1x1") != "none" else None
    return None


def method_overhead(method: dict[str, Any], bench_dir: Path = BENCHMARKS) -> tuple[float, str]:
    """The method's training step over the dense one (≥ 1; a ratio below 1 is timing noise)
    and where it comes from; 1 when no measurement matches."""
    row = overhead_row(method)
    if row is None:
        return 1.0, "no method overhead"
    for name in ("method_overhead_lapp.json", "method_overhead.json"):
        path = bench_dir / name
        if not path.exists():
            continue
        for r in json.loads(path.read_text()).get("rows", []):
            if r["method"] == row:
                ratio = max(1.0, float(r["ratio_median_of_pairs"]))
                model = json.loads(path.read_text()).get("settings", {}).get("model", "?")
                return ratio, f"{name}: {row} ×{ratio:.2f} ({model}, CPU)"
    return 1.0, f"no measured overhead of {row}"


def _reduce(output: Any) -> torch.Tensor:
    """A scalar from any model output (tensor, tuple, dict): the probe's stand-in loss."""
    if isinstance(output, torch.Tensor):
        return output.float().mean()
    items = output.values() if isinstance(output, dict) else output
    return sum(_reduce(o) for o in items)  # type: ignore[return-value]


def _times(fn, device: torch.device, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def probe(cfg: dict[str, Any], cache_dir: str | Path | None = None) -> Throughput:
    """Time a few training steps and evaluation passes of the task's model on a synthetic batch
    (of the size training reads from the run's data source: the ImageNet stand-in's 64 px, not
    224; the loss a mean of the outputs) on this machine's device, at the recipe's batch on a
    GPU and a batch of about ``PROBE_SECONDS`` a step on the CPU."""
    task_cfg, trainer = cfg["task"], cfg["trainer"]
    device_str = device_name(trainer)
    batch = int(task_cfg["recipe"]["baseline"]["batch_size"])
    precision = trainer["precision"]
    source = cfg["data"]["source"]
    key = json.dumps(
        [PROBE_FORMAT, task_cfg, source, batch, str(precision), device_str, torch.__version__],
        sort_keys=True,
        default=str,
    )
    cache = None
    if cache_dir is not None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        cache = Path(cache_dir) / "throughput" / f"{digest}.json"
        if cache.exists():
            fig = json.loads(cache.read_text())
            return Throughput(**{**fig, "source": f"{fig['source']} (cached: {cache})"})
    gpu = _on_gpu(trainer) and torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    task = instantiate(task_cfg, _convert_="all")
    model = task.build_model().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=is_bf16(precision))

    def train_step(x: torch.Tensor) -> None:
        with autocast:
            loss = _reduce(model(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    recipe_batch, least, times = batch, min(batch, PROBE_MIN_BATCH), []
    model.train()
    if not gpu:  # size the batch so a step takes about PROBE_SECONDS
        small = task.training_input(least, source)
        train_step(small)  # warm-up
        times = _times(lambda: train_step(small), device, 1)
        batch = max(least, min(batch, int(least * PROBE_SECONDS / times[0])))
    x = task.training_input(batch, source).to(device)
    if gpu or batch != least:  # warm up at this batch (cuDNN's algorithm search, allocations)
        train_step(x)
        times = []
    times += _times(lambda: train_step(x), device, 3 if gpu else 2 - len(times))
    train_s = statistics.median(times)
    model.eval()
    with torch.no_grad(), autocast:
        eval_s = statistics.median(_times(lambda: model(x), device, 3 if gpu else 2))
    fig = Throughput(
        batch / train_s,
        batch / eval_s,
        device_str,
        f"probe: {task_cfg['name']} {_precision_key(precision)}, "
        f"{'×'.join(map(str, x.shape[1:]))} inputs, batch {batch}"
        + (
            f" of the recipe's {recipe_batch} (a CPU probe step is sized to ~{PROBE_SECONDS:g} s)"
            if batch < recipe_batch
            else ""
        )
        + f", on {device_str}",
    )
    if cache is not None:
        write_atomic(cache, json.dumps(fig.__dict__).encode())
    return fig
