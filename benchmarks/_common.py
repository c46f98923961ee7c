"""What the benchmark scripts share: models with trained-looking statistics and their compress
contexts, peak RSS of one measurement in its own process, tasks that may not exist yet, and the
JSON every script writes. Not part of the package: ``benchmarks/*.py`` import it as ``_common``
(their own folder is first on ``sys.path`` when run as ``python benchmarks/<script>.py``).
"""

from __future__ import annotations

import argparse
import glob
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from prunebench.method import CompressContext
from prunebench.reporting.records import write_atomic
from prunebench.running.provenance import environment

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


def task_from_conf(name: str, **overrides):
    """The task ``conf/task/<name>.yaml`` describes, instantiated as the pipeline does, with
    ``overrides`` (top-level task keys, e.g. a smaller ``input_size``) merged in."""
    cfg = OmegaConf.load(ROOT / "conf" / "task" / f"{name}.yaml")
    cfg = OmegaConf.merge(cfg, overrides)
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


class PhasePeak:
    """Peak resident memory (MiB) of this process while a ``with`` block runs, sampled from
    ``/proc/self/statm`` every ``interval`` seconds by a thread — for the phase a measurement is
    about (training steps, forward passes), not the set-up before it (tracing a structure)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak_mib = interval, 0.0
        self._stop = threading.Event()

    @staticmethod
    def now_mib() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self.now_mib())
            time.sleep(self.interval)

    def __enter__(self) -> PhasePeak:
        self.peak_mib = self.now_mib()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, self.now_mib())

    def report(self) -> None:
        """Print the phase's peak as the last stdout line, for :func:`peak_rss`."""
        print(json.dumps({"phase_peak_mib": self.peak_mib}), flush=True)


# Runs a script as __main__ and, at exit, writes its /proc/self/status (VmHWM: the peak RSS of
# this process image). The rusage of a child is no use here: Linux starts a forked child's
# high-water mark at the parent's RSS, so every child would report at least this process's size.
_BOOT = (
    "import atexit, os, runpy, sys\n"
    "out = os.environ['PRUNEBENCH_HWM_FILE']\n"
    "atexit.register(lambda: open(out, 'w').write(open('/proc/self/status').read()))\n"
    "sys.argv = sys.argv[1:]\n"
    "sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def peak_rss(args: list[str], env: dict | None = None) -> dict[str, float]:
    """Peak resident memory (MiB) of ``python <script> <args…>`` run in a fresh process from the
    repository root: ``process_mib``, the process's own ``VmHWM`` at exit (so peaks of
    different measurements never mix), and ``phase_mib`` when the script ends by printing a
    :class:`PhasePeak` report. Raises if the process fails, with its stderr's tail."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile(suffix=".status") as hwm,
    ):
        env = {**os.environ, **(env or {}), "PRUNEBENCH_HWM_FILE": hwm.name}
        code = subprocess.call(
            [sys.executable, "-c", _BOOT, *args], cwd=ROOT, env=env, stdout=out, stderr=err
        )
        out.seek(0), err.seek(0)
        text, error = (f.read().decode(errors="replace") for f in (out, err))
        status = Path(hwm.name).read_text()
    if code != 0:
        raise RuntimeError(f"{args} failed ({code}): {error[-2000:]}")
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    result = {"process_mib": kib / 1024}
    lines = text.strip().splitlines()
    if lines and lines[-1].startswith('{"phase_peak_mib"'):
        result["phase_mib"] = json.loads(lines[-1])["phase_peak_mib"]
    return result


def meta() -> dict:
    return {
        **environment(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "note": MACHINE_NOTE,
    }


def timed_sgd_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool):
    """A function running one SGD step of ``model`` (cross-entropy on the fixed batch ``x, y``,
    bf16 autocast when ``bf16``) and returning its seconds."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    return step


def step_parser(
    doc: str, out: str, rounds: int, warmup: int, tasks_help: str
) -> argparse.ArgumentParser:
    """The command line the side-by-side step benchmarks share: task configs, batch, rounds,
    untimed warm-up steps, torch threads and the JSON to write."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("tasks", nargs="+", help=tasks_help)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--warmup", type=int, default=warmup)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=out)
    return ap


def interleaved(steps: dict, rounds: int, warmup: int) -> dict[str, list[float]]:
    """Each timed step's seconds over ``rounds``, one step of each per round in turn, the order
    reversed every other round (after ``warmup`` untimed steps each), so all see the same
    machine state."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            times[name].append(steps[name]())
    return times


def write_json(out: str, settings: dict, **parts) -> None:
    """Write ``{"settings", "meta", **parts}`` to ``out`` atomically and say so."""
    write_atomic(out, json.dumps({"settings": settings, "meta": meta(), **parts}, indent=1))
    print(f"wrote {out}")
