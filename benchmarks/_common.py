"""What the benchmark scripts share: models with trained-looking statistics and their compress
contexts, peak RSS of one measurement in its own process, tasks that may not exist yet, and the
JSON every script writes. Not part of the package: ``benchmarks/*.py`` import it as ``_common``
(their own folder is first on ``sys.path`` when run as ``python benchmarks/<script>.py``).
"""

from __future__ import annotations

import glob
import importlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from prunebench.method import CompressContext
from prunebench.records import write_atomic

ROOT = Path(__file__).resolve().parents[1]
MACHINE_NOTE = (
    "measured on a shared 2-core machine with 4 other busy processes: quote medians and "
    "side-by-side ratios only, not absolute times"
)


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random statistics and affine parameters (as a trained net has), so
    that scores built on them (BN γ, filter norms after folding) are not all equal. The weights
    stay random: for latency and memory only the structure matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.6 * torch.rand(n, generator=g) - 0.3)
    return model.eval()


def task_from_conf(name: str):
    """The task ``conf/task/<name>.yaml`` describes, instantiated as the pipeline does."""
    cfg = OmegaConf.load(ROOT / "conf" / "task" / f"{name}.yaml")
    return instantiate(cfg, _convert_="all")


def task_context(
    task, model: nn.Module, macs_reduction: float, example: torch.Tensor | None = None, **kw
) -> CompressContext:
    """A compress context over ``task``'s prunable and protected layers (no training)."""
    x = task.example_input(1) if example is None else example
    return CompressContext.build(
        model, x, task.prunable_layers(model), task.protected_layers(model), macs_reduction, **kw
    )


def optional_task(module: str) -> tuple[list[str], str | None]:
    """(config names of the tasks whose ``_target_`` lives in ``module``, None) when ``module``
    imports; ([], "not built yet: …") otherwise — tasks other branches are adding."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return [], f"not built yet ({module}: {exc})"
    names = []
    for path in sorted(glob.glob(str(ROOT / "conf" / "task" / "*.yaml"))):
        target = str(OmegaConf.load(path).get("_target_", ""))
        if target.startswith(module + "."):
            names.append(Path(path).stem)
    return names, (None if names else f"not built yet (no conf/task/*.yaml targets {module})")


def peak_rss_mib(args: list[str], env: dict | None = None) -> float:
    """Peak resident memory (MiB) of ``python <args>`` run in a fresh process from the repository
    root, read from that process's own ``rusage`` (``os.wait4``), so peaks of different
    measurements never mix. Raises if the process fails, with its stderr's tail."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed ({proc.returncode}): {err[-2000:]}")
    return usage.ru_maxrss / 1024  # Linux: KiB


def meta() -> dict:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "note": MACHINE_NOTE,
    }


def write_json(out: str, settings: dict, **parts) -> None:
    """Write ``{"settings", "meta", **parts}`` to ``out`` atomically and say so."""
    write_atomic(out, json.dumps({"settings": settings, "meta": meta(), **parts}, indent=1))
    print(f"wrote {out}")
