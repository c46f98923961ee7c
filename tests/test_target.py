"""Target solving: hand-computed cases on a two-layer toy, and the error messages."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunebench.errors import ConfigError
from prunebench.plan import Plan, PlanEntry
from prunebench.surgery.structure import MacModel, Structure
from prunebench.surgery.target import solve, validate_target


class Toy(nn.Module):
    """conv a (3→4) → conv b (4→4) → conv c (4→2), 1×1 kernels on 2×2 inputs: MACs per conv are
    cin·cout·4, i.e. 48 + 64 + 32 = 144."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def widths(**kept: int) -> Plan:
    """A filter plan keeping the first ``kept[root]`` of 4 channels."""
    return Plan({r: PlanEntry("filter", 4, list(range(n))) for r, n in kept.items()})


@pytest.fixture
def toy():
    m, x = Toy(), torch.zeros(1, 3, 2, 2)
    s = Structure(m, x, ["a", "b"], protected=["c"])
    return s, MacModel(m, x, s)


def test_mac_model_hand_computed(toy):
    s, mm = toy
    assert mm.dense_total == 144
    assert s.groups["a"].out_members == ["a"] and s.groups["a"].in_members == ["b"]
    # a keeps 2 of 4: a = 3·2·4 = 24, b = 2·4·4 = 32, c = 32 → 88.
    assert mm.plan_macs(widths(a=2)) == 88
    # a keeps 2, b keeps 1: 24 + 2·1·4 + 1·2·4 = 40.
    assert mm.plan_macs(widths(a=2, b=1)) == 40


def test_global_prunes_lowest_scores_first(toy):
    _, mm = toy
    scores = {"a": torch.tensor([4.0, 1.0, 3.0, 2.0]), "b": torch.tensor([5.0, 6.0, 0.5, 7.0])}
    # Removing b[2] saves 16+8 = 24 MACs (reduction 1/6 ≈ 0.1667) — exactly the target.
    plan = solve(scores, mm, 24 / 144, "global", tolerance=0.01)
    assert plan.widths() == {"b": 3} and plan.entries["b"].keep == [0, 1, 3]
    # Next lowest is a[1]: b keeps 3, a keeps 3 → 36 + 36 + 24 = 96, reduction 1/3.
    plan = solve(scores, mm, 0.3, "global", tolerance=0.05)
    assert plan.entries["a"].keep == [0, 2, 3] and plan.entries["b"].keep == [0, 1, 3]


def test_uniform_prunes_equal_fractions(toy):
    _, mm = toy
    scores = {"a": torch.tensor([4.0, 1.0, 3.0, 2.0]), "b": torch.tensor([5.0, 6.0, 0.5, 7.0])}
    # Order a, b, a, b, …: after 3 removals a keeps 2, b keeps 3 → 24 + 24 + 24 = 72 = 0.5 removed.
    plan = solve(scores, mm, 0.5, "uniform", tolerance=0.0)
    assert plan.widths() == {"a": 2, "b": 3}
    assert mm.plan_macs(plan) == 72
    assert plan.entries["a"].keep == [0, 2] and plan.entries["b"].keep == [0, 1, 3]


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "half", None])
def test_target_outside_unit_interval_is_refused(bad):
    with pytest.raises(ConfigError, match=r"target.macs_reduction=.* is outside \(0, 1\)"):
        validate_target(bad)


def test_unreachable_target_and_bad_allocation(toy):
    _, mm = toy
    scores = {"a": torch.ones(4), "b": torch.ones(4)}
    with pytest.raises(ConfigError, match="unreachable"):
        solve(scores, mm, 0.95, "global")
    with pytest.raises(ConfigError, match="choices"):
        solve(scores, mm, 0.5, "layerwise")


def test_protected_layer_in_a_group_is_refused():
    m, x = Toy(), torch.zeros(1, 3, 2, 2)
    with pytest.raises(ConfigError, match="protected"):
        Structure(m, x, ["a", "c"], protected=["c"])


def test_round_to_keeps_multiples_and_restores_the_best_removed(toy):
    _, mm = toy
    scores = {"a": torch.tensor([4.0, 1.0, 3.0, 2.0]), "b": torch.tensor([5.0, 6.0, 0.5, 7.0])}
    # Removal order b[2], a[1], a[3]. With multiples of 2, removing b[2] alone keeps b at 4 and
    # a[1] alone keeps a at 4: nothing is saved until a[3] goes — a keeps [0, 2] (scores 4, 3),
    # b keeps all: 3·2·4 + 2·4·4 + 32 = 88 MACs, reduction 56/144.
    plan = solve(scores, mm, 24 / 144, "global", tolerance=0.3, round_to=2)
    assert plan.entries["a"].keep == [0, 2] and "b" not in plan.entries
    assert mm.plan_macs(plan) == 88
    assert solve(scores, mm, 24 / 144, "global").widths() == {"b": 3}  # unrounded: b keeps 3
    with pytest.raises(ConfigError, match="round_to=0"):
        solve(scores, mm, 0.2, "global", round_to=0)
