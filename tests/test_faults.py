"""Faults: a run killed with SIGKILL resumes from Lightning's last checkpoint to the same
result; a killed sweep leaves no partial file and its rerun finishes the rest; two sweeps on
one results directory lose nothing; a diverging run leaves a failed record and the sweep goes on."""

from __future__ import annotations

import re
import signal

import torch

from prunebench.reporting.leaderboard import aggregate, failed_runs
from prunebench.reporting.markdown import render_markdown
from tests.conftest import records, run_py, start_py

SUMMARY = re.compile(r"sweep: (\d+) points — (\d+) ran, (\d+) skipped \(.*?\), (\d+) failed")
# 3 finetune epochs of 2 batches, so a kill at epoch 2 leaves a checkpoint mid-stage
RESUMABLE = ("budget.finetune_epochs=3", "task.recipe.baseline.batch_size=32")


def _no_partial_files(tmp_path) -> None:
    assert not [p for p in tmp_path.rglob("*.tmp")], "a half-written file was left behind"
    for cache in (tmp_path / "runs" / "cache").rglob("*.pt"):
        torch.load(cache, weights_only=True)  # whole


def test_killed_sweep_resumes_to_the_uninterrupted_result(tmp_path):
    killed = run_py(
        tmp_path, "-m", "method=magnitude,random", *RESUMABLE, PRUNEBENCH_KILL_AT="finetune:2"
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert records(tmp_path) == {}  # killed in magnitude's finetune: no record, none partial
    _no_partial_files(tmp_path)
    (ckpt,) = (tmp_path / "runs" / "resume").rglob("finetune/last.ckpt")
    assert "magnitude" in str(ckpt)

    rerun = run_py(tmp_path, "-m", "method=magnitude,random", *RESUMABLE)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    # it goes on at epoch 2 (epochs 0-1 are in the checkpoint), and ends where a run that was
    # never killed ends: the same weights, bit for bit
    assert f"resuming the finetune stage at epoch 2 from {ckpt}" in rerun.stdout
    assert SUMMARY.search(rerun.stdout).groups() == ("2", "2", "0", "0")
    resumed = records(tmp_path)
    assert sorted(resumed) == ["magnitude", "random"]
    assert not ckpt.exists()
    assert not (tmp_path / "runs" / "resume").exists()  # no empty folders left behind
    assert "exists and is not empty" not in rerun.stderr  # Lightning's noise on resume
    # the record counts the whole finetune stage, and says how much came before the kill
    part = resumed["magnitude"]["resumed"]["finetune"]
    assert part["from_epoch"] == 2 and part["seconds_before"] > 0
    assert resumed["magnitude"]["stage_seconds"]["finetune"] > part["seconds_before"]
    assert "resumed" not in resumed["random"]
    # not on a terminal: plain progress lines, in the output and in Hydra's run.log
    assert "finetune epoch 3/3 · loss" in rerun.stdout + rerun.stderr
    logs = "".join(p.read_text() for p in (tmp_path / "runs").rglob("run.log"))
    assert "finetune epoch 3/3 · loss" in logs and "ETA" in logs

    straight = run_py(tmp_path, "method=magnitude", *RESUMABLE, results="straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert "resuming" not in straight.stdout
    a, b = records(tmp_path, "straight")["magnitude"], resumed["magnitude"]
    print(f"test/top1 uninterrupted {a['test']['test/top1']}, resumed {b['test']['test/top1']}")
    assert a["point_id"] == b["point_id"] and a["finetune_epochs"] == b["finetune_epochs"] == 3
    assert a["test"] == b["test"]
    assert a["weights_sha256"] == b["weights_sha256"]  # the very same weights


def test_two_sweeps_on_one_results_dir_lose_nothing(tmp_path):
    """Opposite orders, so both start at once on different points needing the same baseline."""
    # own sweep folders: two sweeps started in the same second would share the default one
    one = start_py(tmp_path, "-m", "method=dense,random", f"hydra.sweep.dir={tmp_path / 's1'}")
    two = start_py(tmp_path, "-m", "method=random,dense", f"hydra.sweep.dir={tmp_path / 's2'}")
    outs = [p.communicate(timeout=600) for p in (one, two)]
    assert one.returncode == two.returncode == 0, [o[1][-2000:] for o in outs]
    recs = records(tmp_path)
    assert sorted(recs) == ["dense", "random"]
    assert sorted(r["baseline"]["source"] for r in recs.values()) == ["cache", "trained"]
    counts = [SUMMARY.search(o[0]).groups() for o in outs]
    assert sum(int(c[1]) for c in counts) == 2 and sum(int(c[2]) for c in counts) == 2
    _no_partial_files(tmp_path)


def test_diverging_run_leaves_a_failed_record_and_the_sweep_goes_on(tmp_path):
    from prunebench.reporting.claims import load_claims
    from prunebench.reporting.records import read_record
    from tests.conftest import ROOT

    out = run_py(
        tmp_path,
        "-m",
        "method=magnitude",
        "task.recipe.baseline.batch_size=32",  # 2 steps an epoch: the second one overflows
        "task.recipe.finetune.lr=1e30,0.01",
    )
    assert out.returncode == 3, out.stderr[-3000:]  # every point ran; one failed
    assert SUMMARY.search(out.stdout).groups() == ("2", "1", "0", "1")
    recs = [read_record(p) for p in (tmp_path / "results").rglob("*.json")]
    (bad,) = [r for r in recs if r["status"] == "failed"]
    (good,) = [r for r in recs if r["status"] == "ok"]
    assert bad["config"]["task"]["recipe"]["finetune"]["lr"] == 1e30
    assert bad["failure"]["stage"] == "finetune" and bad["failure"]["epoch"] == 0
    assert re.match(
        r"finetune stage, epoch 0: TrainingDiverged: finetune loss became (nan|inf)",
        bad["failure_reason"],
    ), bad["failure_reason"]
    md = render_markdown(
        aggregate(recs), load_claims(ROOT / "results" / "claims.yaml"), [], failed_runs(recs)
    )
    tables, failures = md.split("## Failed runs")
    assert bad["point_id"] in failures and bad["point_id"] not in tables
    assert "| magnitude |" in tables and good["point_id"] not in failures


def test_a_cut_cache_file_is_rebuilt_and_a_cut_record_is_rerun(cfg_factory, capsys):
    """What a non-atomic writer killed mid-write would leave: the first half of each file."""
    from pathlib import Path

    from prunebench.reporting.records import read_record
    from prunebench.running.pipeline import Pipeline

    first = Pipeline(cfg_factory("method=dense")).run()
    cache = Path(first["config"]["paths"]["cache_dir"]) / "baselines"
    (blob,) = cache.glob("*.pt")
    (record,) = Path(first["config"]["paths"]["results_dir"]).rglob("*.json")
    for path in (blob, record):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    again = Pipeline(cfg_factory("method=dense")).run()
    out = capsys.readouterr().out
    assert "is corrupt" in out and "running the point again" in out
    assert again["baseline"]["source"] == "trained" and again["run_id"] != first["run_id"]
    assert again["test"] == first["test"]  # rebuilt deterministically
    assert read_record(record)["run_id"] == again["run_id"]
    torch.load(blob, weights_only=True)  # whole again
