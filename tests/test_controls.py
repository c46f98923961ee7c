"""``scripts/controls.py``: bad input is one ``error:`` line with nothing written; a smoke run of
the controls of a (hand-made) KCP record on ResNet-20 writes magnitude and random records that the
leaderboard pairs with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prunebench.reporting.headline import headline
from prunebench.reporting.leaderboard import aggregate, load_records
from prunebench.reporting.records import write_record
from prunebench.running.baseline import baseline_key
from prunebench.running.pipeline import run_config
from scripts.controls import main as controls_main
from tests.conftest import make_cfg
from tests.test_records import minimal_record

TASK = "cifar10_resnet20"
# the smallest run: a few images, no latency timing (the baseline hash sees the data sizes too)
TINY = (
    "budget.data.train=64",
    "budget.data.val=32",
    "budget.data.test=32",
    "budget.latency.batch=0",
)


def method_record(tmp_path: Path, seed: int = 0, post: int = 128, **over) -> Path:
    """A KCP record as the smoke tier would write it, its baseline hash the real one."""
    cfg = make_cfg(tmp_path, "method=kcp", f"seed={seed}", *TINY)
    cfg = run_config(cfg)  # as a record keeps it: precision resolved, the tier's recipe merged
    r = minimal_record(
        point_id=f"{TASK}-kcp-s{seed}",
        run_id=f"kcp{seed}",
        method="kcp",
        method_start="baseline",
        seed=seed,
        achieved_macs_reduction=0.5,
        baseline={
            "hash": baseline_key(cfg),
            "recipe_hash": "R",
            "source": "cache",
            "test": {"test/top1": 0.3},
        },
        test={"test/top1": 0.3},
        plan_widths={"layer1.0.conv1": 16},
        train_samples={
            "split": 64,
            "compress": {"seen": post, "distinct": 64},
            "finetune": {"seen": 0, "distinct": 0},
            "compress_val_passes": 0,
        },
        config=cfg,
    )
    r.update(over)
    path = tmp_path / "results" / "records" / TASK / f"{r['point_id']}.json"
    write_record(r, path)
    return path


def _files(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())


def _args(tmp_path: Path, *more: str) -> list[str]:
    return [
        "--task",
        TASK,
        "--method",
        "kcp",
        "--tier",
        "smoke",
        "--results",
        str(tmp_path / "results"),
        *more,
        "--",
        f"paths.runs_dir={tmp_path / 'runs'}",
        "logger=none",
        *TINY,
    ]


def test_dry_run_prints_one_multirun_per_seed(tmp_path, capsys):
    method_record(tmp_path, seed=0)
    method_record(tmp_path, seed=1, post=300)
    assert controls_main(_args(tmp_path, "--dry-run")) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("$ ")]
    assert len(lines) == 2
    assert "method=magnitude,random" in lines[0] and "budget.finetune_samples=128" in lines[0]
    assert "seed=1" in lines[1] and "budget.finetune_samples=300" in lines[1]
    assert "target.macs_reduction=0.5 " in lines[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("setup", "more", "words"),
    [
        ("none", [], ["no record of method 'kcp'", "tier 'smoke'"]),
        ("failed", [], ["every record of method 'kcp'", "failed", f"{TASK}-kcp-s0"]),
        ("ok", ["--tier", "cpu"], ["no record of method 'kcp'", "tier 'cpu'"]),
        ("other_hash", [], [f"{TASK}-kcp-s0", "baseline recipe"]),
        ("no_samples", [], ["no train_samples"]),
    ],
)
def test_bad_requests_are_one_line_and_run_nothing(tmp_path, capsys, setup, more, words):
    if setup == "failed":
        method_record(tmp_path, status="failed", failure_reason="boom")
    elif setup == "other_hash":
        path = method_record(tmp_path)
        r = json.loads(path.read_text())
        r["baseline"]["hash"] = "0123456789abcdef"
        path.write_text(json.dumps(r))
    elif setup == "no_samples":
        path = method_record(tmp_path)
        r = json.loads(path.read_text())
        del r["train_samples"]
        path.write_text(json.dumps(r))
    elif setup == "ok":
        method_record(tmp_path)
    (tmp_path / "results" / "records").mkdir(parents=True, exist_ok=True)
    before = _files(tmp_path)
    assert controls_main(_args(tmp_path, *more)) == 2  # a later --tier wins
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert all(w in err for w in words), err
    assert _files(tmp_path) == before


def test_a_low_rank_plan_gets_no_scratch_control_and_says_why(tmp_path, capsys):
    """TRP from scratch: the scratch control would need its low-rank pairs, which the scratch
    method cannot build, so only magnitude and random run, and a note says so."""
    entry = {"kind": "lowrank", "size": 16, "keep": list(range(5))}
    ckpt = tmp_path / "runs" / "checkpoints" / TASK / "trp.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"plan": {"entries": {"layer1.0.conv1": entry}}}, ckpt)
    method_record(
        tmp_path,
        method="trp",
        method_start="scratch",
        method_hparams={"start": "scratch"},
        checkpoint=f"checkpoints/{TASK}/trp.pt",
    )
    args = _args(tmp_path, "--dry-run")
    args[args.index("kcp")] = "trp"
    assert controls_main(args) == 0
    out, err = capsys.readouterr()
    (line,) = [x for x in out.splitlines() if x.startswith("$ ")]
    assert "method=magnitude,random" in line
    assert "no scratch control: its plan has lowrank entries" in err


def test_a_record_named_by_path_must_be_the_method_tier_and_task_asked(tmp_path, capsys):
    path = method_record(tmp_path)
    args = ["--task", "cifar10_resnet56", "--method", "kcp", "--record", str(path)]
    assert controls_main(args) == 2
    assert "task 'cifar10_resnet20', not 'cifar10_resnet56'" in capsys.readouterr().err
    assert controls_main(["--task", TASK, "--method", "magnitude", "--record", str(path)]) == 2
    assert "is a control itself" in capsys.readouterr().err


@pytest.mark.slow  # two run.py launches (~9 min on 2 cores shared with 20 other processes)
def test_smoke_run_of_the_controls_pairs_with_the_method(tmp_path):
    method_record(tmp_path, post=96)  # 1.5 epochs of the 64-image split: 2 epochs of 1 batch
    assert controls_main(_args(tmp_path)) == 0
    records, problems = load_records(tmp_path / "results")
    assert not problems
    by_method = {r["method"]: r for r in records}
    assert set(by_method) == {"kcp", "magnitude", "random"}
    for name in ("magnitude", "random"):
        c = by_method[name]
        assert c["finetune_samples"] == 96  # 2 shortened epochs of ceil(48/128) = 1 batch each
        assert c["train_samples"]["finetune"] == {"seen": 128, "distinct": 64}
        assert abs(c["achieved_macs_reduction"] - 0.5) <= 0.01
        assert c["baseline"]["hash"] == by_method["kcp"]["baseline"]["hash"]
    (rows,) = aggregate(records).values()
    (h,) = headline(rows)
    for kind in ("magnitude", "random"):
        (p,) = h.paired[kind].pairings
        assert p.status == "matched"
        assert p.delta() == pytest.approx(0.3 - by_method[kind]["test"]["test/top1"])
    assert controls_main(_args(tmp_path)) == 0  # a second launch skips both points
    assert len(load_records(tmp_path / "results")[0]) == 3


def test_an_unreachable_reduction_runs_the_nearest_feasible_controls(tmp_path, capsys):
    method_record(tmp_path, achieved_macs_reduction=0.97)  # filter pruning stops at −95.2 %
    assert controls_main(_args(tmp_path, "--dry-run")) == 0
    out, err = capsys.readouterr()
    (line,) = [x for x in out.splitlines() if x.startswith("$ ")]
    assert "target.macs_reduction=0.952 " in line and "matched_to=0.97" in line
    assert "reach only −95.2 % MACs of the wanted −97.0 %" in err
