"""An experiment's budget-matched controls, run by Hydra when its sweep ends.

An experiment (``conf/experiment/*.yaml``) puts :class:`SweepThenControls` in place of
:class:`~prunebench.running.sweep.SweepSummary`. When the multirun ends it prints the sweep's
summary, then hands every ``ok`` record the sweep ran or skipped to ``scripts/controls.py``
(``--record``; one launch per task × method × tier × data source) — the method's points first,
then their controls, with no scheduler of ours. After ``--`` go the command line's launcher
overrides (``hydra/launcher=…``, ``hydra.launcher.*``), so the controls go through the same
launcher, its task, data, trainer, budget and logger overrides, so they start from the method's
baseline (controls.py checks the baseline hash before anything runs), and the sweep's folders,
made absolute. controls.py skips points already recorded and takes the same locks as ``run.py``.
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from prunebench.errors import RecordError
from prunebench.reporting.matching import CONTROLS
from prunebench.reporting.records import read_record
from prunebench.running.sweep import SweepSummary, sweep_records

CONTROLS_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "controls.py"
# command-line keys the controls inherit: what the baseline hash and the launch depend on
CARRIED = ("task.", "data.", "trainer", "budget.", "logger")
# ... except these: controls.py sets the finetune length itself
DROPPED = ("budget.finetune_samples",)
LAUNCHER = ("hydra/launcher", "hydra.launcher.")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def carried_overrides(task_overrides: list[str], hydra_overrides: list[str]) -> list[str]:
    """The overrides of a sweep's command line that its controls get: the launcher's, then
    those of the task, data, trainer, budget (not its finetune length) and logger. The
    experiment, method, seed and target are the method point's own and stay behind; the paths
    are passed apart, made absolute."""
    launcher = [o for o in hydra_overrides if _key(o).startswith(LAUNCHER)]
    kept = [
        o for o in task_overrides if _key(o).startswith(CARRIED) and not _key(o).startswith(DROPPED)
    ]
    return [*launcher, *kept]


def path_overrides(paths: Any) -> list[str]:
    """``paths.runs_dir`` and ``paths.cache_dir`` of a sweep's config, made absolute: the
    controls' runs start from the repository's root."""
    return [
        f"paths.runs_dir={Path(paths['runs_dir']).resolve()}",
        f"paths.cache_dir={Path(paths['cache_dir']).resolve()}",
    ]


def control_launches(records: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], list[str]]:
    """(task, method, tier, data source) → the ``ok`` records' paths whose controls to run; a
    control's own records and the dense ones have none."""
    groups: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)
    for rec in records:
        if rec["status"] != "ok" or rec["method"] in (*CONTROLS, "dense"):
            continue
        key = (rec["task"], rec["method"], rec["budget"], rec["data_source"])
        groups[key].append(rec["_path"])
    return dict(groups)


def controls_commands(config: DictConfig, records: list[dict[str, Any]]) -> list[list[str]]:
    """One ``scripts/controls.py`` command per (task, method, tier, data source) of ``records``."""
    paths = config.paths
    results = str(Path(paths.results_dir).resolve())
    extra = carried_overrides(
        list(config.hydra.overrides.task), list(config.hydra.overrides.hydra)
    ) + path_overrides(paths)
    commands = []
    for (task, method, tier, data), paths_ in sorted(control_launches(records).items()):
        named = [a for p in sorted(paths_) for a in ("--record", p)]
        commands.append(
            [
                sys.executable,
                str(CONTROLS_SCRIPT),
                *("--task", task, "--method", method, "--tier", tier, "--data", data),
                *("--results", results),
                *named,
                "--",
                *extra,
            ]
        )
    return commands


class SweepThenControls(SweepSummary):
    """:class:`SweepSummary`, then the budget-matched controls of the sweep's ``ok`` records
    (``controls=false`` skips them). Exits 3 when a method point failed, else with the
    controls' status."""

    def __init__(self, controls: bool = True) -> None:
        self.controls = controls

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        status = self.summary(config)
        if self.controls and Path(config.hydra.sweep.dir).is_dir():
            status = max(status, self.run_controls(config))
        if status:
            sys.exit(status)

    def run_controls(self, config: DictConfig) -> int:
        """Launch ``scripts/controls.py`` for the sweep's records; its worst exit status."""
        records = []
        for path in sweep_records(Path(config.hydra.sweep.dir)):
            try:
                records.append({**read_record(path), "_path": str(path.resolve())})
            except RecordError as exc:
                print(f"controls: skipped an unreadable record: {exc}")
        commands = controls_commands(config, records)
        if not commands:
            print("controls: no ok record of a pruning method in this sweep; none to run")
            return 0
        if not CONTROLS_SCRIPT.exists():
            print(f"controls: {CONTROLS_SCRIPT} is missing; run scripts/controls.py by hand")
            return 2
        status = 0
        for cmd in commands:
            print("controls: $ python " + " ".join(cmd[1:]), flush=True)
            status = max(status, subprocess.run(cmd, check=False).returncode)
        return status
