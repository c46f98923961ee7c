"""A budget tier's recipe adaptation (``task.<tier>.recipe``): merged for that tier only."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from prunebench.errors import ConfigError
from prunebench.running.pipeline import point_id
from prunebench.running.tier import apply_tier_recipe
from tests.conftest import make_cfg


def _resolved(tmp_path, *overrides: str) -> dict:
    return OmegaConf.to_container(make_cfg(tmp_path, *overrides), resolve=True)


# task → the paper recipe's (baseline lr, finetune lr, batch), the tier's warm-up (epochs, images)
FAMILIES = {
    "cifar10_resnet20": ((0.1, 0.01, 128), (1, 10000)),  # He et al.
    "cifar10_resnet56": ((0.1, 0.01, 128), (2, 5000)),
    "imagenet_resnet18": ((0.1, 0.01, 256), (1, 10000)),  # torchvision's reference recipe
    "imagenet_resnet50": ((0.1, 0.01, 256), (1, 10000)),
}


@pytest.mark.parametrize("task", sorted(FAMILIES))
def test_the_cpu_tier_warms_the_baseline_up_in_the_papers_lr_family_and_paper_is_untouched(
    tmp_path, task
):
    (lr, ft_lr, batch), want_warmup = FAMILIES[task]
    cpu = apply_tier_recipe(_resolved(tmp_path, f"task={task}", "budget=cpu"))
    base = cpu["task"]["recipe"]["baseline"]
    # the paper's lr at its batch as the same lr per image at batch 32 (more steps)
    assert base["batch_size"] == 32 and base["lr"] == pytest.approx(lr * 32 / batch)
    ft = cpu["task"]["recipe"]["finetune"]
    assert ft["lr"] / ft["batch_size"] == pytest.approx(ft_lr / batch)  # the finetune's family too
    # ~310 warm-up steps: 1 epoch of 10,000 images or 2 of 5,000 at batch 32
    assert (base["warmup_epochs"], cpu["budget"]["data"]["train"]) == want_warmup
    assert (base["warmup_shape"], base["warmup_factor"]) == ("linear", 0.0)
    b = cpu["budget"]  # both train the same samples: 70,000 baseline, 20,000 per finetune/compress
    assert b["baseline_epochs"] * b["data"]["train"] == 70_000
    assert b["finetune_epochs"] * b["data"]["train"] == b["compress_epochs"] * b["data"]["train"]
    assert b["finetune_epochs"] * b["data"]["train"] == 20_000
    assert "warmup_epochs" not in cpu["task"]["recipe"]["finetune"]
    paper = _resolved(tmp_path, f"task={task}", "budget=paper")
    assert apply_tier_recipe(paper) == paper  # the paper tier stays the paper's recipe


def test_a_task_without_a_tier_recipe_keeps_its_config_and_point_id(tmp_path):
    cfg = _resolved(tmp_path, "task=imagenet_vgg16", "budget=cpu")
    out = apply_tier_recipe(cfg)
    assert out == cfg and point_id(out) == point_id(cfg)


def test_the_tier_recipe_changes_the_point_id_and_leaves_the_input_alone(tmp_path):
    cfg = _resolved(tmp_path, "budget=cpu")
    before = OmegaConf.to_container(OmegaConf.create(cfg))
    out = apply_tier_recipe(cfg)
    assert cfg == before and point_id(out) != point_id(cfg)


def test_a_tier_recipe_stage_the_task_lacks_is_named_with_the_choices(tmp_path):
    cfg = _resolved(tmp_path, "budget=cpu")
    cfg["task"]["cpu"]["recipe"] = {"pretrain": {"lr": 0.2}}
    with pytest.raises(ConfigError, match=r"task.cpu.recipe stages \['pretrain'\].*'baseline'"):
        apply_tier_recipe(cfg)
