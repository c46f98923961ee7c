"""The grid's coverage matrix on hand-made records: runs with their seeds, a failure with its
reason, "not run" — never a silent omission."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from prunebench.errors import RecordError
from prunebench.reporting.coverage import (
    GRID_METHODS,
    GRID_TASKS,
    coverage_section,
    load_gaps,
    stale_gaps,
)
from prunebench.reporting.leaderboard import aggregate, load_records, split_superseded
from prunebench.reporting.records import write_record
from scripts.leaderboard import main as leaderboard_main
from tests.test_leaderboard import rec

FAILED_CAP = {
    "task": "cifar10_resnet20",
    "method": "cap",
    "data_source": "embedded",
    "budget": "cpu",
    "failure_reason": "compress: out of memory\nTraceback …",
}


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
    failed = [FAILED_CAP]
    m = matrix(records, failed)
    assert list(m) == list(GRID_TASKS)
    r20 = m["cifar10_resnet20"]
    assert r20["kcp"] == "−50.2 % (3); −75.2 % (1)"
    assert r20["cap"] == "failed (1): compress: out of memory"
    assert r20["magnitude"] == "not run"  # only control rows: not counted as the method's cell
    assert r20["lapp"] == "not run"
    assert r20["dense"] == "uncompressed (2)"
    assert m["imagenet_resnet50"] == dict.fromkeys(GRID_METHODS, "not run")


GAP = {"task": "cifar10_resnet20", "method": "lapp", "tier": "cpu", "data": "embedded"}
CHOICES = (["cifar10_resnet20", "stereo"], ["cpu", "paper"], ["disk", "embedded"])


def write_gaps(tmp_path, gaps):
    path = tmp_path / "gaps.yaml"
    path.write_text(yaml.safe_dump({"schema_version": 1, "gaps": gaps}))
    return path


def test_an_empty_cell_says_the_gap_files_reason_and_a_made_cell_ignores_it(tmp_path):
    gaps = load_gaps(
        write_gaps(
            tmp_path,
            [
                {**GAP, "reason": "too  slow |\n on two cores"},
                {**GAP, "method": "kcp", "reason": "stale"},
                {**GAP, "method": "cap", "reason": "not shown: the failure is"},
            ],
        ),
        *CHOICES,
    )
    records = [rec("kcp", s, target=0.5) for s in range(2)]
    failed = [{**FAILED_CAP}]
    tables = aggregate(records)
    lines = coverage_section(
        tables, failed, {**gaps, ("seg_deeplabv3_voc", "cap", "embedded", "cpu", None): "x"}
    )
    rows = {}
    for line in lines:
        if line.startswith("| cifar10_resnet20"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows = dict(zip(GRID_METHODS, cells[1:], strict=True))
    assert rows["lapp"] == "not run [1]"
    assert "[1] too slow | on two cores  " in lines  # whitespace folded; a markdown line break
    assert lines[-2:] == ["[2] x", ""]  # the other task's reason, numbered next
    assert rows["kcp"] == "−50.2 % (2)"
    assert rows["cap"] == "failed (1): compress: out of memory"
    assert rows["spp"] == "not run"
    assert stale_gaps(tables, gaps) == [("cifar10_resnet20", "kcp", "embedded", "cpu", None)]


def test_a_level_gap_is_said_beside_the_levels_made_and_is_stale_once_made(tmp_path):
    gaps = load_gaps(
        write_gaps(
            tmp_path,
            [
                {**GAP, "method": "kcp", "level": 0.75, "reason": "beyond reach"},
                {**GAP, "method": "kcp", "level": 0.9, "reason": "beyond reach"},
                {**GAP, "method": "spp", "level": 0.5, "reason": "too slow"},
                {**GAP, "method": "cap", "level": 0.5, "reason": "made"},
            ],
        ),
        *CHOICES,
    )
    assert ("cifar10_resnet20", "kcp", "embedded", "cpu", 0.75) in gaps
    records = [rec("kcp", s, target=0.5) for s in range(2)] + [rec("cap", 0, target=0.5)]
    tables = aggregate(records)
    lines = coverage_section(tables, [], gaps)
    row = next(line for line in lines if line.startswith("| cifar10_resnet20"))
    cells = dict(zip(GRID_METHODS, [c.strip() for c in row.strip("|").split("|")][1:], strict=True))
    assert cells["kcp"] == "−50.2 % (2); −75 %: not run [1]; −90 %: not run [1]"
    assert cells["spp"] == "not run; −50 %: not run [2]"  # the rest of the cell is unexplained
    assert "[1] beyond reach  " in lines and "[2] too slow" in lines
    # the level with records now is stale; a level at another target is not
    assert stale_gaps(tables, gaps) == [("cifar10_resnet20", "cap", "embedded", "cpu", 0.5)]


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({**GAP, "method": "obd", "reason": "x"}, "method='obd'; choices: dense, magnitude"),
        ({**GAP, "tier": "gpu", "reason": "x"}, "tier='gpu'; choices: cpu, paper"),
        (
            {**GAP, "task": "mnist", "reason": "x"},
            "task='mnist'; choices: cifar10_resnet20, stereo",
        ),
        (GAP, "needs the keys task, method, tier, data, reason (optional: level)"),
        ({**GAP, "reason": "x", "levels": 0.5}, "needs the keys task, method, tier, data"),
        ({**GAP, "reason": "x", "level": 75}, "level=75; a target MACs reduction in (0, 1)"),
        ({**GAP, "reason": "x", "level": "0.75"}, "level='0.75'; a target MACs reduction"),
        ({**GAP, "reason": "  "}, "reason must be a non-empty sentence"),
    ],
)
def test_a_bad_gap_is_named_with_the_choices(tmp_path, entry, words):
    with pytest.raises(RecordError, match=re.escape(f"gaps.yaml: gap 0: {words}")):
        load_gaps(write_gaps(tmp_path, [entry]), *CHOICES)


def test_a_gaps_file_that_is_not_a_gap_list_is_refused(tmp_path):
    path = tmp_path / "gaps.yaml"
    path.write_text("gaps: [task: {")
    with pytest.raises(RecordError, match="gaps.yaml: not valid YAML"):
        load_gaps(path, *CHOICES)
    path.write_text("gaps: {task: stereo}")
    with pytest.raises(RecordError, match="gaps.yaml: expected a mapping with a `gaps:` list"):
        load_gaps(path, *CHOICES)


def test_a_cell_listed_twice_is_refused(tmp_path):
    path = write_gaps(tmp_path, [{**GAP, "reason": "a"}, {**GAP, "reason": "b"}])
    with pytest.raises(RecordError, match="gap 1: cifar10_resnet20 × lapp × embedded × cpu is"):
        load_gaps(path, *CHOICES)
    twice = [{**GAP, "level": 0.75, "reason": "a"}, {**GAP, "level": 0.75, "reason": "b"}]
    with pytest.raises(
        RecordError, match="gap 1: cifar10_resnet20 × lapp × embedded × cpu at 0.75"
    ):
        load_gaps(write_gaps(tmp_path, twice), *CHOICES)
    load_gaps(write_gaps(tmp_path, [{**GAP, "reason": "a"}, twice[0]]), *CHOICES)  # both fine


def test_the_published_gaps_are_valid_and_none_is_stale():
    root = Path(__file__).resolve().parents[1]
    conf = [
        sorted(p.stem for p in (root / "conf" / g).glob("*.yaml"))
        for g in ("task", "budget", "data")
    ]
    gaps = load_gaps(root / "results" / "gaps.yaml", *conf)
    records, _ = load_records(root / "results")
    current, _ = split_superseded(records)
    assert gaps and stale_gaps(aggregate(current), gaps) == []


def test_the_script_reads_a_gaps_file_and_refuses_a_bad_one_writing_nothing(tmp_path, capsys):
    write_record(rec("kcp", 0, target=0.5), tmp_path / "records" / "cifar10_resnet20" / "k.json")
    good = write_gaps(tmp_path, [{**GAP, "reason": "LAPP trains from scratch"}])
    out = tmp_path / "view.md"
    assert leaderboard_main(["--results", str(tmp_path), "--out", str(out)]) == 0
    assert "[1] LAPP trains from scratch" in out.read_text()
    bad = write_gaps(tmp_path / "records", [{**GAP, "method": "obd", "reason": "x"}])
    out.unlink()
    argv = ["--results", str(tmp_path), "--gaps", str(bad), "--out", str(out)]
    assert leaderboard_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: gaps.yaml: gap 0: method='obd'; choices: dense")
    assert not out.exists() and good.is_file()
