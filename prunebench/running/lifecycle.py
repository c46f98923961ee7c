"""A point's life around its stages: the lock, the skip of a point already recorded, the
``failed`` record of a run that raised, and the summary of one that finished.

A point whose valid record is ``ok`` is not run again unless forced. A run that fails leaves a
``failed`` record naming the stage and reason (never in place of an ``ok`` one) and re-raises; an
input error (:class:`PrunebenchError`) writes nothing. One process at a time runs a point (a file
lock beside its record, held by DDP's rank 0).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prunebench.errors import PrunebenchError, RecordError
from prunebench.reporting import report
from prunebench.reporting.records import file_lock, read_record, write_record
from prunebench.running.validate import check_writable

Record = dict[str, Any]


def previous_record(record_path: Path) -> Record | None:
    """The point's existing record, if it is valid (an invalid one is run again)."""
    if not record_path.exists():
        return None
    try:
        return read_record(record_path)
    except RecordError as exc:
        print(f"warning: {exc}; running the point again")
        return None


def skips(previous: Record | None, force: bool) -> bool:
    """Whether a point whose existing record is ``previous`` (None: none, or an invalid one) is
    skipped: its record is ``ok`` and the run is not forced."""
    return bool(previous and previous["status"] == "ok" and not force)


def run_point(
    record_path: Path,
    runs_dir: Path,
    force: bool,
    rank_zero: bool,
    stages: Callable[[], Record],
    failed_record: Callable[[BaseException], Record],
    on_failure: Callable[[], None],
) -> tuple[Record, str]:
    """Run ``stages`` for the point recorded at ``record_path`` unless its ``ok`` record exists.

    Args:
        record_path: where the point's record lives.
        runs_dir: ``paths.runs_dir`` (checked writable before anything runs).
        force: run again even over an ``ok`` record.
        rank_zero: this process writes (DDP's other ranks only run the stages).
        stages: runs the point and returns its ``ok`` record.
        failed_record: the ``failed`` record for an exception the stages raised.
        on_failure: called after any failure (closes the tracker).

    Returns:
        The record and the outcome: ``ran`` or ``skipped`` (a failure re-raises).
    """
    if not rank_zero:  # Lightning started this rank: rank 0 decided to run the point
        return _run_unlocked(None, record_path, rank_zero, stages, failed_record, on_failure)
    check_writable(record_path.parent, "paths.results_dir")
    check_writable(runs_dir, "paths.runs_dir")
    with file_lock(record_path):
        previous = previous_record(record_path)
        if skips(previous, force):
            print(f"record exists: {record_path} (pass force=true to run it again)")
            report.print_summary(previous, record_path)
            return previous, "skipped"
        return _run_unlocked(previous, record_path, rank_zero, stages, failed_record, on_failure)


def _run_unlocked(
    previous: Record | None,
    record_path: Path,
    rank_zero: bool,
    stages: Callable[[], Record],
    failed_record: Callable[[BaseException], Record],
    on_failure: Callable[[], None],
) -> tuple[Record, str]:
    try:
        record = stages()
    except PrunebenchError:
        on_failure()
        raise  # the input is wrong, not the run: nothing is written
    except Exception as exc:
        if rank_zero and not (previous and previous["status"] == "ok"):
            write_record(failed_record(exc), record_path)
        on_failure()
        raise
    if rank_zero:
        write_record(record, record_path)
        report.print_summary(record, record_path)
    return record, "ran"
