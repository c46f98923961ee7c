"""A budget tier's adaptation of a task's optimiser recipe.

A tier shrinks a recipe (fewer epochs, fewer images); a shrunk run may need the recipe adapted
too (a warm-up where the paper's recipe has too few steps to recover from its first ones). A
task states that under its block named like the tier (``cpu: {recipe: {baseline: {...}}}``):
stage → the recipe fields this tier replaces. They are merged into ``task.recipe`` before
anything runs, so the record's config, the point id and the baseline hash all carry the recipe
the run trained with. Tasks without such a block, and the ``paper`` tier, are untouched.
"""

from __future__ import annotations

import copy
from typing import Any

from prunebench.errors import ConfigError


def apply_tier_recipe(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` (a resolved run config) with ``task.<tier>.recipe`` merged into ``task.recipe``
    (a copy; ``cfg`` itself is not changed). A stage the task's recipe lacks is an error."""
    tier = (cfg.get("budget") or {}).get("name")
    block = (cfg["task"].get(tier) or {}) if isinstance(tier, str) else {}
    swapped = block.get("recipe") if isinstance(block, dict) else None
    if not swapped:
        return cfg
    recipe = cfg["task"].get("recipe") or {}
    unknown = sorted(set(swapped) - set(recipe))
    if unknown:
        raise ConfigError(
            f"task.{tier}.recipe stages {unknown} are not in the task's recipe; "
            f"choices: {sorted(recipe)}"
        )
    out = copy.deepcopy(cfg)
    out["task"]["recipe"] = {
        stage: {**spec, **(swapped.get(stage) or {})} for stage, spec in recipe.items()
    }
    return out
