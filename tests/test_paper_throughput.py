"""``benchmarks/paper_throughput.py`` at ``--quick`` sizes on the CPU: every task's training
step runs with its own loss at both precisions, both CIFAR loaders deliver whole batches, and the
JSON says what ran. The GPU figures themselves come from a lent GPU (results/benchmarks/)."""

from __future__ import annotations

import json

from tests.conftest import benchmark_module


def test_quick_run_measures_each_task_and_both_loaders(tmp_path):
    out = tmp_path / "pt.json"
    with benchmark_module("paper_throughput") as bench:
        argv = ["--quick", "--device", "cpu", "--steps", "1", "--workers", "0", "--out", str(out)]
        result = bench.main([*argv, "--tasks", "cifar10_resnet56,stereo_psmnet_sceneflow"])
    assert set(result["tasks"]) == {"cifar10_resnet56", "stereo_psmnet_sceneflow"}
    cifar = result["tasks"]["cifar10_resnet56"]
    assert cifar["batch"] == 2 and cifar["input"] == [3, 32, 32]
    assert result["tasks"]["stereo_psmnet_sceneflow"]["input"] == [6, 32, 64]  # the smoke model
    for entry in result["tasks"].values():
        for dtype in ("fp32", "bf16"):
            assert entry[dtype]["samples_per_s"] > 0 and entry[dtype]["peak_gib"] is None
    loaders = result["cifar_loaders"]
    for name in ("dataloader", "device_resident"):
        assert loaders[name]["samples_per_s"] > 0 and loaders[name]["batches"] == 8
        assert isinstance(loaders[name]["keeps_up_with_resnet56_bf16"], bool)
    written = json.loads(out.read_text())
    assert written["settings"] == {"device": "cpu", "steps": 1, "quick": True}
    assert written["tasks"] == result["tasks"]
