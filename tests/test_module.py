"""The LightningModule's learning-rate schedule: constant warm-up, then step decay."""

import pytest

from prunebench.running.module import warmup_then_steps


def test_warmup_then_steps_hand_values() -> None:
    # 10 warm-up steps at ×0.1, milestones at steps 40 and 60, gamma 0.1.
    f = warmup_then_steps(10, 0.1, [40, 60], 0.1)
    assert [f(s) for s in (0, 9)] == [0.1, 0.1]
    assert [f(s) for s in (10, 39)] == [1.0, 1.0]
    assert f(40) == pytest.approx(0.1) and f(59) == pytest.approx(0.1)
    assert f(60) == pytest.approx(0.01) and f(1000) == pytest.approx(0.01)


def test_no_warmup_is_plain_step_decay() -> None:
    f = warmup_then_steps(0, 0.1, [5], 0.5)
    assert f(0) == 1.0 and f(4) == 1.0 and f(5) == 0.5
