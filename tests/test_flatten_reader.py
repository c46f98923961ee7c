"""A conv's channels read by a linear layer through adaptive-avgpool → flatten (AlexNet's and
VGG's conv5 → classifier): the group is accepted, each pruned channel takes its H·W input columns
out of the linear layer, and masks, slimming, the MACs model and LAPP's soft MACs agree."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from methods.lapp import SoftMacs
from prunebench.plan import Plan, PlanEntry
from prunebench.surgery.masks import apply_masks
from prunebench.surgery.measure import count_macs
from prunebench.surgery.slim import slim
from prunebench.surgery.structure import MacModel, Structure, flatten_span


class Tiny(nn.Module):
    """conv a (3→4) → conv b (4→6) → max-pool → adaptive avg-pool 3×3 → flatten → fc (54→5) →
    head (5→2), on 8×8 inputs. MACs: a 4·3·9·64 = 6,912; b 6·4·9·64 = 13,824; fc 54·5 = 270;
    head 10 — 21,016."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((3, 3))
        self.fc, self.head = nn.Linear(54, 5), nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.b(torch.relu(self.a(x)))), 2)
        return self.head(torch.relu(self.fc(torch.flatten(self.pool(x), 1))))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model, x = Tiny().eval(), torch.randn(2, 3, 8, 8)
    return model, x, Structure(model, x[:1], ["a", "b"], protected=["head"])


def test_the_linear_reader_takes_hw_columns_per_channel(tiny):
    _, _, s = tiny
    g = s.groups["b"]
    assert g.in_members == ["fc"] and g.reader_span("fc") == 9
    cols = g.reader_columns("fc", 54)
    assert cols.shape == (6, 9) and cols[2].tolist() == list(range(18, 27))


def test_masked_equals_slimmed_and_macs_are_predicted(tiny):
    model, x, s = tiny
    plan = Plan({"b": PlanEntry("filter", 6, [0, 2, 5]), "a": PlanEntry("filter", 4, [1, 3])})
    slimmed = slim(model, plan, x[:1], s).eval()
    # a keeps 2: a 2·3·9·64 = 3,456; b 3·2·9·64 = 3,456; fc 3·9·5 = 135; head 10.
    assert count_macs(model, x[:1]).total == 21_016
    assert count_macs(slimmed, x[:1]).total == MacModel(model, x[:1], s).plan_macs(plan) == 7_057
    keep = torch.cat([torch.arange(9 * c, 9 * c + 9) for c in (0, 2, 5)])
    torch.testing.assert_close(slimmed.fc.weight, model.fc.weight[:, keep])
    masked = apply_masks(copy.deepcopy(model), plan, s).eval()
    with torch.no_grad():
        torch.testing.assert_close(masked(x), slimmed(x))


def test_lapp_soft_macs_follow_the_flattened_reader(tiny):
    model, x, s = tiny
    mm = MacModel(model, x[:1], s)
    widths = {"a": torch.tensor(2.0), "b": torch.tensor(3.0)}
    assert float(SoftMacs(mm)(widths)) == pytest.approx(7_057)


def test_flatten_span_accepts_only_channel_major_blocks():
    assert flatten_span(list(range(12)), 3) == 4
    assert flatten_span(list(range(8, 20)), 3) == 4  # a concat's second input: offset 2 channels
    assert flatten_span([0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11], 3) is None  # channel-last
    assert flatten_span(list(range(10)), 3) is None
    assert flatten_span(list(range(2, 14)), 3) is None  # blocks not at multiples of 4
