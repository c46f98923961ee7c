"""Which code and which machine produced a record: the last commit that changed code, and the
torch version, thread count and processor it ran with."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import torch


def git_commit() -> str | None:
    """The last commit that changed code (anything outside results/), with ``+dirty`` when
    tracked code has uncommitted changes. Committing records does not change it.
    ``PRUNEBENCH_GIT_COMMIT`` stands in where the code runs from a copy without ``.git`` (the
    working tree sent to a remote GPU machine)."""
    if os.environ.get("PRUNEBENCH_GIT_COMMIT"):
        return os.environ["PRUNEBENCH_GIT_COMMIT"]
    here = Path(__file__).resolve().parent
    code = ["--", ":(top)", ":(top,exclude)results"]

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=here)

    try:
        sha = git("log", "-1", "--format=%H", *code).stdout.strip()
        dirty = git("diff", "--quiet", "HEAD", *code).returncode == 1
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("+dirty" if dirty else "")) or None


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` ("unknown" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def environment(device: str = "cpu") -> dict[str, Any]:
    """What the numbers may depend on beyond the code and the config: the torch version, the
    intra-op thread count training ran with (float reductions split across threads sum in
    another order), the processor, and the GPU when ``device`` is ``"cuda"``."""
    # torch's version as a plain str: the baseline cache's weights-only load refuses TorchVersion
    env: dict[str, Any] = {
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
    }
    if device == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env
