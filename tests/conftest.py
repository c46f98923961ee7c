from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn

import prunebench.running  # noqa: F401 — registers the run config's schema with Hydra

ROOT = Path(__file__).resolve().parents[1]


def make_cfg(tmp_path: Path, *overrides: str) -> DictConfig:
    """The composed run config, writing everything under ``tmp_path``, W&B off by default."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "budget=smoke",
                "logger=none",
                f"paths.results_dir={tmp_path / 'results'}",
                f"paths.runs_dir={tmp_path / 'runs'}",
                *overrides,
            ],
        )


def conv3d_stack() -> nn.Sequential:
    """A tiny 3D conv stack (PSMNet's cost-aggregation shape): conv-BN-ReLU ×2, then a head."""
    return nn.Sequential(
        nn.Conv3d(2, 8, 3, padding=1),
        nn.BatchNorm3d(8),
        nn.ReLU(),
        nn.Conv3d(8, 8, 3, padding=1),
        nn.BatchNorm3d(8),
        nn.ReLU(),
        nn.Conv3d(8, 1, 3, padding=1),
    ).eval()


@pytest.fixture
def cfg_factory(tmp_path: Path):
    return lambda *o: make_cfg(tmp_path, *o)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# -- running ``python run.py`` as a user does, for the scale and fault tests -----------------
# The smoke tier shrunk further: these tests start real processes, whose numbers do not matter.
TINY = (
    "budget=smoke",
    "logger=none",
    "budget.data.train=64",
    "budget.data.val=32",
    "budget.data.test=32",
    "budget.latency.batch=0",
)


def command(tmp_path: Path, *args: str, results: str = "results") -> list[str]:
    """``run.py`` writing to ``tmp_path/<results>`` and ``tmp_path/runs``."""
    multirun = [a for a in args if a == "-m"]
    rest = [a for a in args if a != "-m"]
    return [
        sys.executable,
        "run.py",
        *multirun,
        *TINY,
        f"paths.results_dir={tmp_path / results}",
        f"paths.runs_dir={tmp_path / 'runs'}",
        *rest,
    ]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", **extra}


def run_py(
    tmp_path: Path, *args: str, results: str = "results", **extra_env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(tmp_path, *args, results=results),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env(**extra_env),
    )


def start_py(tmp_path: Path, *args: str, **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen(
        command(tmp_path, *args),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(**extra_env),
    )


def records(tmp_path: Path, results: str = "results") -> dict[str, dict]:
    """Every record under ``tmp_path/<results>``, by method (each must be valid)."""
    from prunebench.reporting.records import read_record

    out = {}
    for path in (tmp_path / results).rglob("*.json"):
        rec = read_record(path)
        out[rec["method"]] = rec
    return out


@contextlib.contextmanager
def benchmark_module(name: str) -> Iterator[object]:
    """``benchmarks/<name>.py`` imported as a module, with its folder on ``sys.path`` while it is
    used (the scripts import their sibling ``_common``)."""
    folder = str(ROOT / "benchmarks")
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(folder)
