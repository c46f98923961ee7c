"""prunebench entry point: ``python run.py task=… method=… [seed=… budget=… data=…]``.

Exit status: 0 — the point ran, or was skipped because its valid record exists; 2 — bad input
(one ``error:`` line; nothing written); 3 — the run failed (a ``failed`` record says at which
stage and why). In a multirun (``-m``) a failed point does not stop the sweep: the others run,
and the sweep exits 3 at the end if any failed (``prunebench.running.sweep.SweepSummary``). Hydra's own
refusals (an unknown task, method or budget, a misspelt key, an override it cannot parse) are bad
input too: one ``error:`` line and status 2 (``HYDRA_FULL_ERROR=1`` shows Hydra's full report).
"""

from __future__ import annotations

import os
import re
import sys
import traceback

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from prunebench.errors import PrunebenchError, one_line
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
    except OmegaConfBaseException as exc:  # e.g. seed=${foo}: an interpolation that fails
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except Exception as exc:  # noqa: BLE001 — the failed record is written; report and go on
        traceback.print_exc()
        if pipeline is None:  # setting up failed before the point had a record path
            print(f"run failed while setting up (nothing written): {exc}", file=sys.stderr)
        else:
            if pipeline.rank_zero:
                write_outcome("failed", pipeline.point_id, str(pipeline.record_path), str(exc))
            print(f"run failed: {exc} (record: {pipeline.record_path})", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return None
        sys.exit(EXIT_RUN_FAILED)
    if pipeline.rank_zero:
        write_outcome(pipeline.outcome, pipeline.point_id, str(pipeline.record_path))
    return record["test"].get(record["metric"])


def expand_home(arg: str) -> str:
    """``key=~/file`` → ``key=$HOME/file``: Hydra's override lexer reads ``~`` as its delete
    operator, and the shell expands ``~`` after ``=`` only for variable names without dots."""
    match = re.fullmatch(r"([^=~][^=]*)=~(/.*)?", arg)
    return f"{match[1]}={os.path.expanduser('~')}{match[2] or ''}" if match else arg


def cli() -> None:
    """``main`` with Hydra's composition errors as one ``error:`` line and exit status 2."""
    sys.argv = [sys.argv[0], *map(expand_home, sys.argv[1:])]
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors instead of printing them
    try:
        main()
    except (HydraException, OmegaConfBaseException) as exc:
        if previous == "1":  # the user asked for Hydra's full report
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


if __name__ == "__main__":
    cli()
