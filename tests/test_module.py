"""The LightningModule's learning-rate schedule: constant or linear warm-up, then step decay."""

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


def test_linear_warmup_then_steps_hand_values() -> None:
    # 4 warm-up steps from ×0 up by 0.25 a step, milestones at steps 10 and 20, gamma 0.1.
    f = warmup_then_steps(4, 0.0, [10, 20], 0.1, "linear")
    assert [f(s) for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert f(9) == 1.0 and f(10) == pytest.approx(0.1) and f(20) == pytest.approx(0.01)
    # from warmup_factor 0.2 over 4 steps: 0.2, 0.4, 0.6, 0.8, then 1
    g = warmup_then_steps(4, 0.2, [10], 0.1, "linear")
    assert [g(s) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


def test_the_module_warms_up_linearly_per_step_over_whole_epochs() -> None:
    # 5 steps an epoch, 4 epochs, warm-up 2 epochs (10 steps) from 0 to lr 0.1, then ÷10 at
    # 50 % (epoch 2 = step 10) and 75 % (epoch 3 = step 15): the lr the optimiser holds per step.
    from types import SimpleNamespace

    from torch import nn

    from prunebench.running.module import PruneModule
    from prunebench.task import OptimSpec
    from tasks.classification.task import CifarClassification

    spec = OptimSpec(lr=0.1, warmup_epochs=2, warmup_factor=0.0, warmup_shape="linear")
    task = CifarClassification("t", 20, {"baseline": {"lr": 0.1}})
    module = PruneModule(nn.Linear(2, 2), task, spec, "baseline")
    module._trainer = SimpleNamespace(max_epochs=4, estimated_stepping_batches=20)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.01 * s for s in range(10)] + [0.01] * 5 + [0.001] * 5
    assert lrs == pytest.approx(expected)


def test_an_unknown_warmup_shape_is_named_with_the_choices() -> None:
    from prunebench.errors import ConfigError
    from prunebench.task import OptimSpec

    with pytest.raises(ConfigError, match=r"warmup_shape='cosine'.*'constant', 'linear'"):
        OptimSpec(lr=0.1, warmup_shape="cosine")
