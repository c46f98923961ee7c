from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def make_cfg(tmp_path: Path, *overrides: str) -> DictConfig:
    """The composed run config, writing everything under ``tmp_path``, W&B off by default."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "budget=smoke",
                "logger=none",
                f"paths.results_dir={tmp_path / 'results'}",
                f"paths.runs_dir={tmp_path / 'runs'}",
                *overrides,
            ],
        )


def conv3d_stack() -> nn.Sequential:
    """A tiny 3D conv stack (PSMNet's cost-aggregation shape): conv-BN-ReLU ×2, then a head."""
    return nn.Sequential(
        nn.Conv3d(2, 8, 3, padding=1),
        nn.BatchNorm3d(8),
        nn.ReLU(),
        nn.Conv3d(8, 8, 3, padding=1),
        nn.BatchNorm3d(8),
        nn.ReLU(),
        nn.Conv3d(8, 1, 3, padding=1),
    ).eval()


@pytest.fixture
def cfg_factory(tmp_path: Path):
    return lambda *o: make_cfg(tmp_path, *o)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
