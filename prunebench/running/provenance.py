"""Which code produced a record: the last commit that changed code."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


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
