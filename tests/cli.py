"""Running ``python run.py`` as a user does, for the scale and fault tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
    from prunebench.records import read_record

    out = {}
    for path in (tmp_path / results).rglob("*.json"):
        rec = read_record(path)
        out[rec["method"]] = rec
    return out
