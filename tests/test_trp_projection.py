"""``benchmarks/trp_projection.py`` on one tiny round: both solvers project every TRP layer of
the task (ResNet-20: 18 non-1×1 convs after the first), land within float32 rounding of each
other, and the step ratios follow from the medians it reports."""

from __future__ import annotations

import json

import pytest

from tests.conftest import benchmark_module


def test_both_solvers_project_every_trp_layer_and_agree(tmp_path):
    out = tmp_path / "tp.json"
    with benchmark_module("trp_projection") as bench:
        argv = ["cifar10_resnet20", "--batch", "2", "--rounds", "1", "--warmup", "0"]
        result = bench.main([*argv, "--out", str(out)])
    row = result["cifar10_resnet20"]
    assert row["trp_layers"] == 18
    assert row["max_relative_weight_difference"] < 1e-4
    ms = row["median_ms"]
    assert row["trp_step_over_dense_gram"] == pytest.approx(
        1 + ms["project_gram"] / ms["dense_step"]
    )
    assert row["solver_ratio_direct_over_gram"] == pytest.approx(
        ms["project_direct"] / ms["project_gram"]
    )  # one round: the median of one ratio
    assert json.loads(out.read_text())["tasks"] == result
