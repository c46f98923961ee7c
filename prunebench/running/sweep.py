"""What each point of a sweep did, and a summary at the end of a Hydra multirun.

Every run leaves ``outcome.json`` (``ran`` / ``skipped`` / ``failed``, the point id and the
record) in its Hydra output folder; :class:`SweepSummary`, a Hydra callback registered in
``conf/config.yaml``, reads them when the multirun ends — whatever launcher ran the jobs (basic,
joblib, submitit), since the files are the only thing the launching process and the jobs share.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from prunebench.reporting.records import write_atomic

OUTCOME_FILE = "outcome.json"
OUTCOMES = ("ran", "skipped", "failed")


def write_outcome(outcome: str, point_id: str | None, record: str | None, note: str = "") -> None:
    """Leave this job's outcome in its Hydra output folder (nothing outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    if outcome not in OUTCOMES:
        raise ValueError(f"outcome={outcome!r}; choices: {OUTCOMES}")
    if not HydraConfig.initialized():
        return
    folder = Path(HydraConfig.get().runtime.output_dir)
    write_atomic(
        folder / OUTCOME_FILE,
        json.dumps({"outcome": outcome, "point_id": point_id, "record": record, "note": note}),
    )


def summarise(sweep_dir: str | Path) -> dict[str, Any]:
    """Counts of each outcome under ``sweep_dir`` (one ``outcome.json`` per job folder), plus
    the failed points; jobs that left no outcome (killed, or refused as bad input) are
    ``unfinished``."""
    sweep_dir = Path(sweep_dir)
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    counts: Counter = Counter()
    failed = []
    for job in sorted(jobs, key=lambda p: int(p.name)):
        path = job / OUTCOME_FILE
        if not path.exists():
            counts["unfinished"] += 1
            continue
        out = json.loads(path.read_text())
        counts[out["outcome"]] += 1
        if out["outcome"] == "failed":
            failed.append(f"{out['point_id']}: {out['note']}")
    return {
        "jobs": len(jobs),
        **{k: counts[k] for k in (*OUTCOMES, "unfinished")},
        "failed_points": failed,
    }


def sweep_records(sweep_dir: str | Path) -> list[Path]:
    """The records of the points that ran or were skipped under ``sweep_dir`` (job order)."""
    out = []
    jobs = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()]
    for job in sorted(jobs, key=lambda p: int(p.name)):
        path = job / OUTCOME_FILE
        if path.exists():
            outcome = json.loads(path.read_text())
            if outcome["outcome"] in ("ran", "skipped") and outcome["record"]:
                out.append(Path(outcome["record"]))
    return out


class SweepSummary(Callback):
    """Prints, at the end of a multirun, how many points ran, were skipped (a valid record
    existed; ``force=true`` reruns them) and failed; exits 3 when any failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        status = self.summary(config)
        if status:
            sys.exit(status)  # every point ran; the sweep's status says some failed (run.py's)

    def summary(self, config: DictConfig) -> int:
        """Print the sweep's summary; 3 when a point failed, else 0."""
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return 0
        s = summarise(sweep_dir)
        print(
            f"sweep: {s['jobs']} points — {s['ran']} ran, {s['skipped']} skipped (record exists; "
            f"force=true reruns), {s['failed']} failed, {s['unfinished']} unfinished · {sweep_dir}"
        )
        for line in s["failed_points"]:
            print(f"  failed: {line}")
        return 3 if s["failed"] else 0
