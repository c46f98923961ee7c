"""``benchmarks/tier_step.py`` on two tiny rounds: each task's step runs at the input its cpu tier
trains on, and the ratios are taken against the first task."""

from __future__ import annotations

import json

import pytest

from tests.conftest import benchmark_module


def test_each_task_steps_at_its_training_input_and_the_first_is_the_unit(tmp_path):
    out = tmp_path / "ts.json"
    with benchmark_module("tier_step") as bench:
        argv = ["cifar10_resnet20", "imagenet_resnet18", "--batch", "2", "--rounds", "2"]
        result = bench.main([*argv, "--warmup", "0", "--out", str(out)])
    assert result["cifar10_resnet20"]["input_shape"] == [2, 3, 32, 32]
    assert result["imagenet_resnet18"]["input_shape"] == [2, 3, 64, 64]  # the stand-in's 64 px
    assert result["cifar10_resnet20"]["ratio_vs_first"] == pytest.approx(1.0)
    assert result["imagenet_resnet18"]["median_step_ms"] > 0
    assert json.loads(out.read_text())["tasks"] == result
