"""``scripts/plan.py``: the points of a sweep and their status in hand-made records, the controls
that would follow, the work per stage and the estimate arithmetic — nothing trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

from prunebench.planning import throughput
from prunebench.planning.estimate import hours, seconds
from prunebench.planning.points import sweep_jobs, sweep_points
from prunebench.planning.throughput import Throughput, benchmark_figure
from prunebench.planning.work import Work, point_work, split_sizes
from prunebench.reporting.records import write_record
from prunebench.running.baseline import baseline_key
from prunebench.running.pipeline import run_config
from scripts import plan as plan_script
from tests.conftest import make_cfg
from tests.test_records import minimal_record

FIGURE = Throughput(train_per_s=100.0, eval_per_s=400.0, device="cpu (test)", source="hand-made")


def _common(tmp_path: Path) -> list[str]:
    return [
        "budget=smoke",
        "logger=none",
        f"paths.results_dir={tmp_path / 'results'}",
        f"paths.runs_dir={tmp_path / 'runs'}",
    ]


def _record(point, status: str = "ok", post: int = 128) -> None:
    """A hand-made record of ``point`` at its path, with its real baseline hash."""
    rec = minimal_record(
        point_id=point.point_id,
        method=point.cfg["method"]["name"],
        method_start="baseline",
        seed=point.cfg["seed"],
        status=status,
        failure_reason=None if status == "ok" else "boom",
        baseline={
            "hash": baseline_key(point.cfg),
            "recipe_hash": "R",
            "source": "cache",
            "test": {},
        },
        train_samples={
            "split": 256,
            "compress": {"seen": post, "distinct": 256},
            "finetune": {"seen": 0, "distinct": 0},
            "compress_val_passes": 0,
        },
        plan_widths={"layer1.0.conv1": 8},
        config=point.cfg,
    )
    write_record(rec, point.path)


def test_the_sweep_is_hydras_and_the_command_line_seed_wins(tmp_path):
    jobs, params = sweep_jobs(["+experiment=trp_cifar10_resnet20_channel"])
    assert params == {"seed": "0,1,2"} and [j[0] for j in jobs] == ["seed=0", "seed=1", "seed=2"]
    jobs, _ = sweep_jobs(["+experiment=trp_cifar10_resnet20_channel", "seed=1"])
    assert jobs == [["seed=1", "+experiment=trp_cifar10_resnet20_channel"]]
    jobs, _ = sweep_jobs(["method=dense,kcp", "seed=0,1", "hydra/launcher=joblib"])
    assert jobs == [
        ["method=dense", "seed=0"],
        ["method=dense", "seed=1"],
        ["method=kcp", "seed=0"],
        ["method=kcp", "seed=1"],
    ]


def test_each_point_says_whether_its_record_skips_it(tmp_path):
    overrides = ["method=dense,kcp", "seed=0,1", *_common(tmp_path)]
    points = sweep_points(overrides)
    assert [(p.cfg["method"]["name"], p.cfg["seed"]) for p in points] == [
        ("dense", 0),
        ("dense", 1),
        ("kcp", 0),
        ("kcp", 1),
    ]
    assert all(p.status == "to run" for p in points)
    _record(points[2])
    _record(points[1], status="failed")
    (points[3].path.parent / f"{points[3].point_id}.json").write_text("{not json")
    again = sweep_points(overrides)
    assert [p.point_id for p in again] == [p.point_id for p in points]  # run.py's own ids
    assert [p.status for p in again] == ["to run", "failed: reruns", "done", "to run"]
    forced = sweep_points([*overrides, "force=true"])
    assert forced[2].status == "forced: reruns" and not forced[2].done


def test_work_per_stage_follows_the_budget_and_the_method(tmp_path):
    cfg = run_config(make_cfg(tmp_path, "method=kcp", "target.macs_reduction=0.5"))
    sizes, _ = split_sizes(cfg)
    assert sizes == {"train": 256, "val": 128, "test": 128}  # the smoke tier's
    w = point_work(cfg, True, "train", sizes)
    # KCP: 5 steps of −10 %, a finetune epoch between them (4), then the finetune stage (1)
    assert (w.baseline, w.compress, w.finetune) == (256, 4 * 256, 256)
    # a validation pass per epoch (1 + 4 + 1), the baseline's val + test, the final test
    assert w.forward == 6 * 128 + 128 + 128 + 128
    assert point_work(cfg, True, "none", sizes).baseline == 0
    lapp = run_config(make_cfg(tmp_path, "method=lapp"))
    w = point_work(lapp, False, "none", sizes)
    assert (w.compress, w.finetune, w.post_baseline) == (256, 0, 256)  # from scratch, 1 epoch
    cap = run_config(make_cfg(tmp_path, "method=cap"))
    w = point_work(cap, False, "none", sizes)
    assert w.compress == 0 and w.forward == round(0.2 * 256) + 128  # calibration, test
    ctrl = run_config(make_cfg(tmp_path, "method=magnitude", "budget.finetune_samples=500"))
    assert point_work(ctrl, True, "none", sizes).finetune == 500


def test_full_splits_come_from_the_datasets_published_sizes(tmp_path):
    cfg = run_config(
        make_cfg(tmp_path, "task=imagenet_resnet50", "budget=paper", "data=disk", "data.root=/d")
    )
    sizes, source = split_sizes(cfg)
    assert sizes == {"train": 1_281_167 - 10_000, "val": 10_000, "test": 50_000}
    assert "imagenet" in source


def test_the_estimate_is_samples_over_the_rate():
    work = Work(baseline=1000, compress=500, finetune=250, forward=400)
    # training (1000 + 500 × 1.2 + 250) / 100 per s, evaluation 400 / 400 per s
    assert seconds(work, FIGURE, overhead=1.2) == pytest.approx(18.5 + 1.0)
    assert seconds(work, FIGURE) == pytest.approx(17.5 + 1.0)
    assert hours(3600 * 2.5) == "2.5" and hours(3600 * 123.4) == "123" and hours(None) == "—"


def _bench(tmp_path: Path, device: str = "GPU X") -> Path:
    fig = {
        "device": device,
        "arch": "resnet50",
        "batch": 256,
        "model": {
            "fp32": {"train_images_per_s": 2000.0, "eval_images_per_s": 6000.0},
            "bf16": {"train_images_per_s": 4000.0, "eval_images_per_s": 12000.0},
        },
        "loader": {"images_per_s": 900.0, "workers": 16, "images": 2048},
    }
    (tmp_path / "imagenet_throughput.json").write_text(json.dumps(fig))
    return tmp_path


def test_a_benchmark_figure_matches_model_batch_precision_and_device(tmp_path):
    bench = _bench(tmp_path)
    base = ["task=imagenet_resnet50", "budget=paper", "trainer=gpu"]
    emb = run_config(make_cfg(tmp_path, *base, "trainer.precision=bf16-mixed"))
    fig = benchmark_figure(emb, "GPU X", bench)
    assert (fig.train_per_s, fig.eval_per_s) == (4000.0, 12000.0)
    disk = run_config(make_cfg(tmp_path, *base, "trainer.precision=32-true", "data=disk"))
    fig = benchmark_figure(disk, "GPU X", bench)
    assert (fig.train_per_s, fig.eval_per_s) == (900.0, 900.0) and "loader" in fig.source
    assert benchmark_figure(emb, "GPU Y", bench) is None  # another device
    r18 = run_config(make_cfg(tmp_path, "task=imagenet_resnet18", "budget=paper", "trainer=gpu"))
    assert benchmark_figure(r18, "GPU X", bench) is None  # another model


def test_the_plan_lists_points_controls_and_their_totals(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plan_script, "probe", lambda cfg, cache: FIGURE)
    overrides = ["method=dense,kcp", "seed=0", *_common(tmp_path)]
    rows, est = plan_script.plan(overrides)
    assert [(r.kind, r.cfg["method"]["name"]) for r in rows] == [
        ("point", "dense"),
        ("point", "kcp"),
        ("control", "magnitude"),
        ("control", "random"),
    ]
    dense, kcp, mag, rnd = rows
    assert dense.work.baseline == 256 and kcp.work.baseline == 0  # one baseline per seed
    for ctrl in (mag, rnd):  # finetuned for KCP's post-baseline samples, after it has run
        assert ctrl.work.finetune == kcp.work.post_baseline == 5 * 256
        assert ctrl.status == "after the method"
    for r in rows:
        overhead = throughput.method_overhead(r.cfg["method"])[0]
        assert r.secs == pytest.approx(seconds(r.work, FIGURE, overhead))
    text = plan_script.render(rows, est)
    total = sum(r.secs for r in rows if r.kind == "point") / 3600
    assert f"to run: 2 point(s) of 2, {hours(total * 3600)} CPU-h" in text
    assert "[1] hand-made — 100.0 training, 400.0 evaluation samples/s" in text


def test_a_recorded_point_lists_the_controls_controls_py_would_launch(tmp_path, monkeypatch):
    monkeypatch.setattr(plan_script, "probe", lambda cfg, cache: FIGURE)
    overrides = ["method=kcp", "seed=0", *_common(tmp_path)]
    (point,) = sweep_points(overrides)
    _record(point, post=128)
    cache = tmp_path / "runs" / "cache" / "baselines" / f"{baseline_key(point.cfg)}.pt"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"")  # the method's baseline is cached: its controls train none
    rows, _ = plan_script.plan(overrides)
    kinds = [(r.kind, r.cfg["method"]["name"], r.status) for r in rows]
    assert kinds == [
        ("point", "kcp", "done"),
        ("control", "magnitude", "to run"),
        ("control", "random", "to run"),
    ]
    for r in rows[1:]:
        assert r.cfg["budget"]["finetune_samples"] == 128 and r.work.finetune == 128
        assert r.cfg["target"]["macs_reduction"] == 0.5 and r.target == "−50.0 %"
        assert r.work.baseline == 0


def test_bad_overrides_are_one_line(tmp_path, capsys):
    assert plan_script.main(["+experiment=nosuch", *_common(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert "Available options in 'experiment':" in err and "lapp_cifar10_resnet20" in err


def test_the_probe_times_the_inputs_training_reads(tmp_path, monkeypatch):
    # The ImageNet stand-in trains at 64 px: a probe at the stated 224 px (the MACs input)
    # overestimated its cpu-tier compute ~12× (ResNet-50 dense: 32 CPU-h).
    cfg = run_config(make_cfg(tmp_path, "task=imagenet_resnet18", "task.embedded.size=32"))
    task = instantiate(cfg["task"], _convert_="all")
    assert tuple(task.training_input(2, "embedded").shape) == (2, 3, 32, 32)
    assert tuple(task.training_input(2, "disk").shape) == (2, 3, 224, 224)
    monkeypatch.setattr(throughput, "PROBE_SECONDS", 1e-3)  # the smallest batch: fast
    fig = throughput.probe(cfg)
    assert "3×32×32 inputs, batch 2 of the recipe's 256" in fig.source
    assert fig.train_per_s > 0 and fig.eval_per_s > 0
