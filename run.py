"""prunebench entry point: ``python run.py task=… method=… [seed=… budget=… data=…]``."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from prunebench.errors import PrunebenchError
from prunebench.pipeline import Pipeline


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        record = Pipeline(cfg).run()
    except PrunebenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    return record["test"].get(record["metric"])


if __name__ == "__main__":
    main()
