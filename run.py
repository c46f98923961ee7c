"""prunebench entry point: ``python run.py task=… method=… [seed=… budget=… data=…]``.

Exit status: 0 — the point ran, or was skipped because its valid record exists; 2 — bad input
(one ``error:`` line; nothing written); 3 — the run failed (a ``failed`` record says at which
stage and why). In a multirun (``-m``) a failed point does not stop the sweep: the others run,
and the sweep exits 3 at the end if any failed (``prunebench.running.sweep.SweepSummary``).
"""

from __future__ import annotations

import sys
import traceback

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from prunebench.errors import PrunebenchError
from prunebench.running.pipeline import Pipeline
from prunebench.running.sweep import write_outcome

EXIT_BAD_INPUT, EXIT_RUN_FAILED = 2, 3


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    pipeline = None
    try:
        pipeline = Pipeline(cfg)
        record = pipeline.run()
    except PrunebenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except Exception as exc:  # noqa: BLE001 — the failed record is written; report and go on
        traceback.print_exc()
        if pipeline.rank_zero:
            write_outcome("failed", pipeline.point_id, str(pipeline.record_path), str(exc))
        print(f"run failed: {exc} (record: {pipeline.record_path})", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return None
        sys.exit(EXIT_RUN_FAILED)
    if pipeline.rank_zero:
        write_outcome(pipeline.outcome, pipeline.point_id, str(pipeline.record_path))
    return record["test"].get(record["metric"])


if __name__ == "__main__":
    main()
