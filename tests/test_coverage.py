"""The grid's coverage matrix on hand-made records: runs with their seeds, a failure with its
reason, "not run" — never a silent omission."""

from __future__ import annotations

from prunebench.reporting.coverage import GRID_METHODS, GRID_TASKS, coverage_section
from prunebench.reporting.leaderboard import aggregate
from tests.test_leaderboard import rec


def matrix(records, failed):
    lines = coverage_section(aggregate(records), failed)
    rows = {}
    for line in lines:
        if line.startswith("| ") and not line.startswith("| task"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = dict(zip(GRID_METHODS, cells[1:], strict=True))
    return rows


def test_cells_say_runs_failures_and_holes():
    records = [rec("kcp", s, target=0.5) for s in range(3)] + [rec("kcp", 0, target=0.75)]
    records += [
        rec("dense", s, target=0.0, widths={}, achieved_macs_reduction=0.0) for s in range(2)
    ]
    records += [rec("magnitude", s, finetune_samples=1000) for s in range(3)]  # a control
    failed = [
        {
            "task": "cifar10_resnet20",
            "method": "cap",
            "data_source": "embedded",
            "budget": "cpu",
            "failure_reason": "compress: out of memory\nTraceback …",
        }
    ]
    m = matrix(records, failed)
    assert list(m) == list(GRID_TASKS)
    r20 = m["cifar10_resnet20"]
    assert r20["kcp"] == "−50.2 % (3); −75.2 % (1)"
    assert r20["cap"] == "failed (1): compress: out of memory"
    assert r20["magnitude"] == "not run"  # only control rows: not counted as the method's cell
    assert r20["lapp"] == "not run"
    assert r20["dense"] == "uncompressed (2)"
    assert m["imagenet_resnet50"] == dict.fromkeys(GRID_METHODS, "not run")
