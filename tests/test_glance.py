"""The README's results-at-a-glance block: hand-made records give hand-computed cells, the block
is replaced between its markers only, missing markers are an error, and the committed README
holds exactly what the script writes from the committed records."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunebench.reporting.glance import BEGIN, END, glance_lines, with_glance
from prunebench.reporting.leaderboard import aggregate, load_records, split_superseded
from tests.test_matching import control, rec

ROOT = Path(__file__).resolve().parents[1]


def _tables():
    dense = [
        rec("dense", s, top1=t, achieved=0.0, compress=0, finetune=0, widths={}, target=None)
        for s, t in [(0, 0.85), (1, 0.86), (2, 0.87)]
    ]
    for d in dense:
        d["plan_widths"] = {}
    kcp = [rec(seed=s, top1=t) for s, t in [(0, 0.800), (1, 0.810), (2, 0.820)]]
    # magnitude 2.0 / 2.1 / 1.9 pt below KCP: beyond noise; random 3 / −1 / 1: within noise
    mag = [control(seed=s, top1=t) for s, t in [(0, 0.780), (1, 0.789), (2, 0.801)]]
    rnd = [control("random", s, top1=t) for s, t in [(0, 0.770), (1, 0.820), (2, 0.810)]]
    return aggregate(dense + kcp + mag + rnd)


def test_cells_are_the_paired_differences_with_their_verdicts():
    lines = glance_lines(_tables())
    assert lines[0].startswith("| task · data · tier | dense | −MACs | method |")
    (row,) = lines[2:]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "cifar10_resnet20 · embedded · cpu"
    assert cells[1] == "test/top1 86.00 ± 1.00 % (n=3)"
    assert cells[2:4] == ["−50 %", "kcp"]
    assert cells[4] == "9.0 ep (45,000 samples)"  # 25,000 compress + 20,000 finetune of 5,000
    assert cells[5] == "+2.00 ± 0.10 (n=3): better"  # 4.30 · 0.10 / √3 = 0.25 < 2.00
    assert cells[6] == "+1.00 ± 2.00 (n=3): within noise"  # 4.30 · 2.00 / √3 = 4.97
    assert cells[7] == "—"  # no from-scratch method: no scratch control


def test_the_block_is_replaced_between_its_markers_only():
    text = f"intro\n{BEGIN}\nstale line\n{END}\noutro\n"
    new = with_glance(text, _tables())
    assert new.startswith(f"intro\n{BEGIN}\n| task") and new.endswith(f"|\n{END}\noutro\n")
    assert "stale line" not in new
    assert with_glance(new, _tables()) == new  # idempotent
    with pytest.raises(ValueError, match="glance:begin"):
        with_glance("no markers here", _tables())
    with pytest.raises(ValueError, match="glance:end"):
        with_glance(f"{END}\n{BEGIN}\n", _tables())


def test_the_committed_readme_block_is_what_the_script_writes():
    records, _ = load_records(ROOT / "results")
    current = [r for r in split_superseded(records)[0] if r["budget"] != "smoke"]
    readme = (ROOT / "README.md").read_text()
    assert with_glance(readme, aggregate(current)) == readme


def test_out_writes_the_file_and_leaves_stdout_and_the_readme_alone(tmp_path, capsys):
    from scripts.leaderboard import main

    before = (ROOT / "README.md").read_text()
    assert main(["--out", str(tmp_path / "view.md"), "--task", "cifar10_resnet20"]) == 0
    assert capsys.readouterr().out == ""
    assert (tmp_path / "view.md").read_text().startswith("# prunebench leaderboard")
    assert (ROOT / "README.md").read_text() == before
