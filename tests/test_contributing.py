"""CONTRIBUTING.md's promise: a new method is one file and one YAML, outside the repository too.

A toy method written into a temporary folder (on ``sys.path``), with its YAML in a config folder
Hydra also searches, runs end to end at the smoke tier and its plan is the one its scores ask
for."""

from __future__ import annotations

import torch
from hydra import compose, initialize_config_dir

from prunebench.reporting.records import checkpoint_file
from prunebench.running.pipeline import Pipeline
from tests.conftest import ROOT, TINY

TOY = '''
from dataclasses import dataclass

import torch

from prunebench.method import CompressContext, Method
from prunebench.plan import Plan


@dataclass
class Toy(Method):
    """Keeps the lowest-indexed filters of every group (a toy, not an importance)."""

    allocation: str = "uniform"

    def compress(self, ctx: CompressContext) -> Plan:
        scores = {
            root: -torch.arange(group.size, dtype=torch.float)
            for root, group in ctx.structure.groups.items()
        }
        return ctx.solve(scores, self.allocation)
'''

YAML = """# A toy method: keeps each group's first filters.
_target_: toy.Toy
name: toy
allocation: uniform
"""


def test_a_method_from_a_temporary_folder_runs_end_to_end(tmp_path, monkeypatch):
    (tmp_path / "toy.py").write_text(TOY)
    (tmp_path / "conf" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "method" / "toy.yaml").write_text(YAML)
    monkeypatch.syspath_prepend(str(tmp_path))
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                "method=toy",
                *TINY,
                f"paths.results_dir={tmp_path / 'results'}",
                f"paths.runs_dir={tmp_path / 'runs'}",
            ],
        )
    rec = Pipeline(cfg).run()
    assert rec["status"] == "ok" and rec["method"] == "toy"
    assert abs(rec["achieved_macs_reduction"] - 0.5) <= 0.01
    plan = torch.load(checkpoint_file(rec), weights_only=False)["plan"]
    assert plan["entries"], "the toy pruned nothing"
    for name, entry in plan["entries"].items():
        keep = entry["keep"]
        assert keep == list(range(len(keep))), f"{name} kept {keep}, not its first filters"
        assert rec["plan_widths"][name] == len(keep)
