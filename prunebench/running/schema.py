"""The run config's schema: the core's own keys typed, checked by Hydra while it composes.

``conf/config.yaml`` starts its defaults list with ``run_schema``, this dataclass registered in
Hydra's ConfigStore, so a wrong type for a core key (``seed=abc``, ``target.round_to=8.5``,
``force=maybe``) or a misspelt key (``targt.macs_reduction=0.5``) fails at composition with
Hydra's own message, before any Python of ours runs. The groups (task, method, budget, data,
trainer, logger) are typed by their own checks: a method's options by
``prunebench.options``, the rest by ``prunebench.running.validate`` and the pre-flight. Ranges
(``seed ≥ 0``, ``0 < macs_reduction < 1``) are checked there too, with the accepted interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SCHEMA_NAME = "run_schema"


@dataclass
class TargetConfig:
    macs_reduction: float = 0.5  # fraction of dense MACs removed, in (0, 1)
    round_to: int = 1  # core filter plans keep multiples of this many channels per group


@dataclass
class PathsConfig:
    results_dir: str = "${paths.runs_dir}/results"
    runs_dir: str = "runs"
    cache_dir: str = "${paths.runs_dir}/cache"


@dataclass
class ExperimentConfig:
    """What ``+experiment=<name>`` (``conf/experiment/``) says about itself: metadata only, so
    it never enters the point id (``pipeline.VOLATILE_KEYS``); the record keeps it."""

    name: str = MISSING  # the file's name
    claim: str = MISSING  # "<method>/<index>": methods.<method>.claims[<index>] in claims.yaml
    # why the target is a stand-in when the claim's quantity is not MACs (null: it is MACs)
    stand_in: str | None = None


@dataclass
class RunConfig:
    task: Any = None
    method: Any = None
    budget: Any = None
    data: Any = None
    trainer: Any = None
    logger: Any = None
    seed: int = 0
    target: TargetConfig = field(default_factory=TargetConfig)
    matched_to: float | None = None
    force: bool = False
    overwrite: bool = False
    paths: PathsConfig = field(default_factory=PathsConfig)
    experiment: ExperimentConfig | None = None


def register_schema() -> None:
    """Store :class:`RunConfig` as ``run_schema`` (idempotent); call before composing."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=RunConfig)
