"""``benchmarks/precision_agreement.py``: bf16 against fp32 on hand-made records — the paired
per-seed differences, the within-noise verdict and the stage-time ratios."""

from __future__ import annotations

import json

import pytest

from tests.conftest import benchmark_module
from tests.test_records import minimal_record


@pytest.fixture(scope="module")
def agreement():
    with benchmark_module("precision_agreement") as module:
        yield module


def _write(folder, precision, dense, pruned, baseline_s, finetune_s):
    """Dense and magnitude records of seeds 0.. with the given test top-1 (fractions)."""
    for seed, (d, m) in enumerate(zip(dense, pruned, strict=True)):
        for method, top1, stages in (
            ("dense", d, {"baseline": baseline_s}),
            ("magnitude", m, {"baseline": 0.1, "finetune": finetune_s}),
        ):
            rec = minimal_record(
                method=method,
                seed=seed,
                test={"test/top1": top1},
                stage_seconds=stages,
                precision={"training": precision, "chosen_by": "config"},
                point_id=f"{method}-{seed}",
            )
            (folder / f"{method}-{seed}.json").write_text(json.dumps(rec))
    # a budget-matched control of the same method is not the method's own point: ignored
    ctl = minimal_record(method="magnitude", seed=0, finetune_samples=10, test={"test/top1": 0.0})
    (folder / "control.json").write_text(json.dumps(ctl))


def test_paired_differences_and_ratios(agreement, tmp_path):
    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    fp32.mkdir(), bf16.mkdir()
    _write(fp32, "32-true", [0.90, 0.86, 0.84], [0.88, 0.84, 0.83], 300.0, 100.0)
    _write(bf16, "bf16-mixed", [0.91, 0.85, 0.84], [0.89, 0.84, 0.82], 150.0, 80.0)
    runs = {"fp32": agreement.load(fp32, "magnitude"), "bf16": agreement.load(bf16, "magnitude")}
    s = agreement.summarise(runs, "magnitude")
    assert s["seeds"] == [0, 1, 2]
    f = s["precisions"]["fp32"]
    assert f["training"] == "32-true"
    assert f["magnitude_delta"] == pytest.approx([-2.0, -2.0, -1.0])
    assert f["dense"]["mean"] == pytest.approx(86.6667, abs=1e-3)
    dd = s["bf16_minus_fp32_dense_top1"]  # per seed +1, -1, 0: mean 0, std 1 → within noise
    assert dd["per_seed"] == pytest.approx([1.0, -1.0, 0.0])
    assert (dd["mean"], dd["std"], dd["within_noise"]) == (pytest.approx(0.0), 1.0, True)
    assert s["fp32_over_bf16_seconds"] == pytest.approx({"baseline": 2.0, "finetune": 1.25})


def test_a_constant_shift_is_not_within_noise(agreement, tmp_path):
    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    fp32.mkdir(), bf16.mkdir()
    _write(fp32, "32-true", [0.90, 0.86], [0.88, 0.84], 300.0, 100.0)
    _write(bf16, "bf16-mixed", [0.85, 0.80], [0.83, 0.78], 150.0, 80.0)  # 5-6 pt lower, always
    runs = {"fp32": agreement.load(fp32, "magnitude"), "bf16": agreement.load(bf16, "magnitude")}
    s = agreement.summarise(runs, "magnitude")
    assert s["bf16_minus_fp32_dense_top1"]["within_noise"] is False
    assert s["bf16_minus_fp32_magnitude_delta"]["mean"] == pytest.approx(0.0)


def test_no_common_seed_is_one_error_line(agreement, tmp_path):
    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    fp32.mkdir(), bf16.mkdir()
    _write(fp32, "32-true", [0.90], [0.88], 300.0, 100.0)
    runs = {"fp32": agreement.load(fp32, "magnitude"), "bf16": agreement.load(bf16, "magnitude")}
    with pytest.raises(SystemExit, match="error: no seed has both dense and magnitude"):
        agreement.summarise(runs, "magnitude")
