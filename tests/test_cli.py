"""``python run.py`` as a user runs it: sweeps share baselines, bad input gets a one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_py(tmp_path: Path, *args: str, multirun: bool = False) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "run.py",
        *(["-m"] if multirun else []),
        "budget=smoke",
        f"paths.results_dir={tmp_path / 'results'}",
        f"paths.runs_dir={tmp_path / 'runs'}",
        *args,
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def test_sweep_shares_one_baseline_per_seed(tmp_path):
    out = run_py(
        tmp_path, "method=dense,magnitude,random", "seed=0,1", "logger=none", multirun=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("*.json")]
    assert len(records) == 6
    by_seed = defaultdict(list)
    for r in records:
        by_seed[r["seed"]].append(r)
    for seed, recs in by_seed.items():
        assert len({r["baseline"]["hash"] for r in recs}) == 1, seed
        assert sorted(r["baseline"]["source"] for r in recs) == ["cache", "cache", "trained"], seed
    assert by_seed[0][0]["baseline"]["hash"] != by_seed[1][0]["baseline"]["hash"]


def test_default_logger_writes_an_offline_wandb_run(tmp_path):
    out = run_py(tmp_path, "method=magnitude", "target.macs_reduction=0.6")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "test/top1" in out.stdout and "target −60.0 %" in out.stdout
    rec = json.loads(next((tmp_path / "results").rglob("*.json")).read_text())
    assert rec["wandb"]["mode"] == "offline"
    runs = list((tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0
    table = json.loads(
        next(runs[0].parent.glob("files/media/table/layers_*.table.json")).read_text()
    )
    assert table["columns"] == [
        "layer",
        "channels_before",
        "channels_after",
        "macs_before",
        "macs_after",
    ]
    rows = {r[0]: r for r in table["data"]}
    assert rows["conv1"][1] == rows["conv1"][2] == 16  # protected: untouched
    assert rows["layer1.0.conv1"][2] < 16  # pruned


def _one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1
    return lines[0]


def test_bad_target_one_line(tmp_path):
    line = _one_line_error(run_py(tmp_path, "target.macs_reduction=1.5", "logger=none"))
    assert "target.macs_reduction=1.5" in line and "(0, 1)" in line


def test_disk_without_root_names_layout(tmp_path):
    line = _one_line_error(
        run_py(tmp_path, "data=disk", f"data.root={tmp_path / 'nope'}", "logger=none")
    )
    assert (
        "cifar-10-batches-py" in line and "data=embedded" in line and str(tmp_path / "nope") in line
    )


def test_unknown_method_lists_choices(tmp_path):
    out = run_py(tmp_path, "method=nosuch", "logger=none")
    assert out.returncode == 2  # bad input, like every other refusal
    assert "Could not find 'method/nosuch'" in out.stderr and "magnitude" in out.stderr


def test_compress_draws_the_same_numbers_from_a_cached_baseline(tmp_path):
    """CaP calibrates on augmented training crops: a run that trains its baseline and a rerun that
    loads it from the cache must keep the same channels, compute the same weights and reach the same metrics."""
    recs = []
    for extra in ((), ("force=true",)):
        out = run_py(tmp_path, "method=cap", "logger=none", *extra)
        assert out.returncode == 0, out.stderr[-2000:]
        recs.append(json.loads(next((tmp_path / "results").rglob("*.json")).read_text()))
    assert [r["baseline"]["source"] for r in recs] == ["trained", "cache"]
    assert recs[0]["plan_widths"] == recs[1]["plan_widths"]
    assert recs[0]["weights_sha256"] == recs[1]["weights_sha256"]  # the compensated weights too
    assert recs[0]["test"] == recs[1]["test"]
