"""``benchmarks/pipeline_time.py --from-records``: the grid's cost from hand-made records, each
point timed once, controls attributed to the method they are matched to."""

from __future__ import annotations

import json

import pytest

from tests.conftest import benchmark_module
from tests.test_records import minimal_record


@pytest.fixture(scope="module")
def pipeline_time():
    with benchmark_module("pipeline_time") as module:
        yield module


def _rec(method, point, compress, finetune, post=0, seed=0, ft_samples=None, baseline=0.0):
    rec = minimal_record(
        method=method,
        point_id=point,
        seed=seed,
        budget="cpu",
        achieved_macs_reduction=0.5,
        stage_seconds={
            "baseline": baseline,
            "compress": compress,
            "finetune": finetune,
            "evaluate": 1.0,
        },
        train_samples={
            "split": 1000,
            "compress": {"seen": post // 2, "distinct": 0},
            "finetune": {"seen": post - post // 2, "distinct": 0},
        },
        config={
            "trainer": {"accelerator": "cpu"},
            "budget": {"finetune_epochs": 4, "finetune_samples": ft_samples, "baseline_epochs": 14},
        },
    )
    rec["baseline"]["source"] = "trained" if baseline else "cache"
    return rec


def test_each_point_is_timed_once_and_shared_controls_are_said(tmp_path, pipeline_time):
    records = [
        _rec("dense", "d", 0.0, 0.0, baseline=100.0),
        _rec("magnitude", "m", 1.0, 10.0, post=4000),  # a method row, not a control
        _rec("kcp", "k", 50.0, 20.0, post=8000),
        _rec("spp", "s", 30.0, 20.0, post=8000),  # same MACs and samples as KCP: same controls
        _rec("magnitude", "cm", 1.0, 40.0, post=8000, ft_samples=8000),
        _rec("random", "cr", 1.0, 38.0, post=8000, ft_samples=8000),
    ]
    for r in records:
        (tmp_path / f"{r['point_id']}.json").write_text(json.dumps(r))
    est = pipeline_time.from_records(tmp_path)
    work = {"d": 1, "m": 12, "k": 71, "s": 51, "cm": 42, "cr": 40}  # compress + finetune + evaluate
    assert est["warm_seconds"] == pytest.approx(sum(work.values()))
    assert est["cold_seconds"] == pytest.approx(sum(work.values()) + 100.0)  # one seed, one base
    pm = est["per_method"]
    assert (pm["kcp"]["controls"], pm["kcp"]["controls_work_seconds"]) == (2, 82.0)
    assert (pm["spp"]["controls"], pm["spp"]["shared_controls"]) == (2, 2)
    assert pm["spp"]["controls_work_seconds"] == 0.0
    assert pm["magnitude"] == {
        "points": 1,
        "work_seconds": 12.0,
        "controls": 0,
        "shared_controls": 0,
        "controls_work_seconds": 0.0,
    }
    assert est["unmatched_controls"] == 0


def test_a_grid_whose_baselines_all_came_from_the_cache_has_no_cold_figure(tmp_path, pipeline_time):
    for r in (_rec("dense", "d", 0.0, 0.0), _rec("kcp", "k", 50.0, 20.0, post=8000)):
        r["stage_seconds"]["baseline"] = 1.2  # reading the cache, not training
        (tmp_path / f"{r['point_id']}.json").write_text(json.dumps(r))
    est = pipeline_time.from_records(tmp_path)
    assert est["warm_seconds"] == pytest.approx(1 + 71)
    assert est["baseline_median_seconds"] is None and est["cold_seconds"] is None
