"""The points a ``run.py -m`` command line would run, and which of them are recorded already.

The sweep is expanded as Hydra's basic sweeper expands it — ``hydra.sweeper.params`` from the
composed config (an experiment's seeds), then the command line's overrides, a later value of a
key replacing an earlier one, and the product of the sweeps — and each job is composed with
Hydra's compose API. Its point id, record path and skip decision are ``run.py``'s own
(``pipeline.run_config``, ``point_id``, ``record_path``; ``lifecycle.skips``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

import prunebench.running  # noqa: F401 — registers the run config's schema with Hydra
from prunebench.running.lifecycle import previous_record, skips
from prunebench.running.pipeline import point_id, record_path, run_config

CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_run(overrides: list[str], hydra_config: bool = False) -> DictConfig:
    """The run config ``overrides`` compose to (with Hydra's own node if ``hydra_config``)."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra_config)


def is_hydra_override(override: str) -> bool:
    """Whether an override configures Hydra itself (``hydra/launcher=…``, ``hydra.…``)."""
    key = override.split("=", 1)[0].lstrip("+~")
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def sweep_jobs(overrides: list[str]) -> tuple[list[list[str]], dict[str, str]]:
    """The override list of every job ``run.py -m <overrides>`` launches, and the sweeper
    params the composed config contributed."""
    parser = OverridesParser.create()
    task = [o for o in overrides if not is_hydra_override(o)]
    fixed = [
        o
        for o, p in zip(task, parser.parse_overrides(task), strict=True)
        if not p.is_sweep_override()
    ]
    hydra_ov = [o for o in overrides if is_hydra_override(o)]
    cfg = compose_run([*fixed, *hydra_ov], hydra_config=True)
    node = cfg.hydra.sweeper.get("params")
    given = OmegaConf.to_container(node, resolve=False) if node is not None else {}
    params = {str(k): str(v) for k, v in given.items()}  # type: ignore[union-attr]
    parsed = parser.parse_overrides([*(f"{k}={v}" for k, v in params.items()), *task])
    (jobs,) = BasicSweeper.split_arguments(parsed, None)
    return jobs, params


@dataclass
class Point:
    """One job of a sweep, as ``run.py`` would see it.

    Attributes:
        overrides: the job's overrides.
        cfg: its run config (``pipeline.run_config``: resolved, precision chosen here).
        point_id: its point id; ``path``: where its record lives.
        record: its existing valid record (None: none, or an invalid one).
        done: whether ``run.py`` would skip it (an ``ok`` record, not forced).
    """

    overrides: list[str]
    cfg: dict[str, Any]
    point_id: str
    path: Path
    record: dict[str, Any] | None
    done: bool

    @property
    def status(self) -> str:
        """The point's state in words."""
        if self.done:
            return "done"
        if self.record is None:
            return "to run"
        return "failed: reruns" if self.record["status"] != "ok" else "forced: reruns"


def point(overrides: list[str]) -> Point:
    """The point one job's ``overrides`` make."""
    cfg = run_config(compose_run(overrides))
    pid = point_id(cfg)
    path = record_path(cfg, pid)
    previous = previous_record(path)
    force = bool(cfg.get("force") or cfg.get("overwrite"))
    return Point(overrides, cfg, pid, path, previous, skips(previous, force))


def sweep_points(overrides: list[str]) -> list[Point]:
    """Every point of ``run.py -m <overrides>``, in launch order."""
    jobs, _ = sweep_jobs(overrides)
    return [point(job) for job in jobs]
