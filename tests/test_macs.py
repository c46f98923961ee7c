"""The MAC/param counter reproduces the reference table of docs/architecture.md exactly."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from prunebench.surgery.measure import count_macs, count_params, flops_from_macs
from tasks.classification.resnet_cifar import CifarResNet

X32 = torch.zeros(1, 3, 32, 32)


@pytest.mark.parametrize(
    ("depth", "shortcut", "macs", "params"),
    [(20, "A", 40_551_040, 269_722), (56, "A", 125_485_696, 853_018)],
)
def test_cifar_option_a(depth, shortcut, macs, params):
    m = CifarResNet(depth, shortcut=shortcut)
    assert count_macs(m, X32).total == macs
    assert count_params(m) == params


@pytest.mark.parametrize(
    ("depth", "macs", "weights"), [(20, 40_813_184, 270_896), (56, 125_747_840, 851_504)]
)
def test_cifar_option_b(depth, macs, weights):
    m = CifarResNet(depth, shortcut="B")
    assert count_macs(m, X32).total == macs
    # The reference counts conv + fc weights only (no BN, no bias).
    conv_fc = sum(
        mod.weight.numel()
        for mod in m.modules()
        if isinstance(mod, torch.nn.Conv2d | torch.nn.Linear)
    )
    assert conv_fc == weights


@pytest.mark.parametrize(
    ("builder", "macs", "params"),
    [
        (torchvision.models.resnet18, 1_814_073_344, 11_689_512),
        (torchvision.models.resnet50, 4_089_184_256, 25_557_032),
    ],
)
def test_torchvision_resnets(builder, macs, params):
    m = builder(weights=None)
    assert count_macs(m, torch.zeros(1, 3, 224, 224)).total == macs
    assert count_params(m) == params


def test_per_module_sums_to_total_and_excludes_bn():
    count = count_macs(CifarResNet(20), X32)
    assert sum(count.per_module.values()) == count.total
    assert count.per_module["layer1.0.conv1"] == 16 * 16 * 9 * 32 * 32
    assert count.per_module["fc"] == 64 * 10
    assert "bn1" not in count.per_module


def test_flops_are_twice_macs():
    assert flops_from_macs(40_551_040) == 81_102_080


def test_paired_latency_interleaves_and_flips_order() -> None:
    from prunebench.surgery.measure import measure_latency_paired

    calls: list[str] = []

    class Tag(nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(self.name)
            return x

    a, b = Tag("a"), Tag("b")
    a.train(), b.eval()
    out = measure_latency_paired({"a": a, "b": b}, torch.zeros(1), repeats=4, warmup=1)
    assert calls == ["a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert out["a"]["repeats"] == 4 and out["b"]["median_ms"] >= 0
    assert a.training and not b.training  # each model's mode is restored
