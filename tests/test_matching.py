"""Budget-matched controls on hand-made records: the matching arithmetic (samples, MACs,
from-scratch totals), the pairing by seed and baseline hash (an unmatched seed, an infeasible
match), the noise rule, and the newest-code-version rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunebench.reporting.headline import cell, headline, summary_words
from prunebench.reporting.leaderboard import aggregate, load_records, split_superseded
from prunebench.reporting.matching import (
    baseline_conflicts,
    beyond_noise,
    control_specs,
    control_target,
    pair,
    post_baseline_samples,
    total_samples,
)
from prunebench.running.pipeline import budget_epochs
from prunebench.running.usage import TrainUsage
from tests.test_records import minimal_record

SPLIT = 5000


def rec(
    method="kcp",
    seed=0,
    top1=0.80,
    achieved=0.502,
    compress=25_000,
    finetune=20_000,
    base_hash=None,
    target=0.5,
    start="baseline",
    widths=None,
    finetune_samples=None,
    **over,
):
    r = minimal_record(
        run_id=f"{method}-{seed}-{achieved}-{top1}",
        point_id=f"{method}-s{seed}-{achieved}-{finetune_samples}",
        method=method,
        method_start=start,
        seed=seed,
        budget="cpu",
        target_macs_reduction=target,
        achieved_macs_reduction=achieved,
        test={"test/top1": top1},
        baseline={
            "hash": base_hash or f"h{seed}",
            "recipe_hash": "R",
            "source": "cache",
            "test": {"test/top1": 0.85},
        },
        macs={"dense": 1000, "compressed": round(1000 * (1 - achieved))},
        params={"dense": 200, "compressed": 100},
        plan_widths=widths or {"layer1.0.conv1": 8},
        train_samples={
            "split": SPLIT,
            "compress": {"seen": compress, "distinct": SPLIT},
            "finetune": {"seen": finetune, "distinct": SPLIT},
            "compress_val_passes": 0,
        },
        finetune_samples=finetune_samples,
        finetune_epochs=0 if not finetune else -(-finetune // SPLIT),
        config={"budget": {"baseline_epochs": 14}},
    )
    r.update(over)
    return r


def control(method="magnitude", seed=0, top1=0.78, achieved=0.503, samples=45_000, **kw):
    """A finetuned control whose finetune read ``samples`` (its compress stage reads none)."""
    return rec(
        method,
        seed,
        top1,
        achieved,
        compress=0,
        finetune=samples,
        finetune_samples=kw.pop("finetune_samples", samples),
        target=kw.pop("target", 0.502),
        **kw,
    )


def test_training_arithmetic_samples_and_from_scratch_total():
    kcp = rec()  # 5 steps × 1 epoch inside compress + 4 finetune epochs
    assert post_baseline_samples(kcp) == 45_000
    assert total_samples(kcp) == 14 * SPLIT + 45_000  # the baseline's 14 epochs, then its own
    lapp = rec("lapp", compress=70_000, finetune=0, start="scratch")
    assert post_baseline_samples(lapp) == total_samples(lapp) == 70_000  # no baseline used
    assert post_baseline_samples(rec(train_samples=None)) is None


def test_control_specs_carry_the_achieved_macs_and_the_samples():
    kcp = rec(achieved=0.50484, seed=2)
    assert control_target(kcp) == 0.505
    mag, rnd = control_specs(kcp)
    assert (mag.method, rnd.method, mag.seed, mag.target) == ("magnitude", "random", 2, 0.505)
    assert "budget.finetune_samples=45000" in mag.overrides
    assert {"target.macs_reduction=0.505", "seed=2", "budget=cpu"} <= set(mag.overrides)
    lapp = rec(
        "lapp",
        compress=70_000,
        finetune=0,
        start="scratch",
        widths={"layer1.0.conv1.conv": 8, "layer2.0.conv1.conv": 18},
        method_hparams={"bypass": "conv1x1", "warmup_epochs": 2},
    )
    *finetuned, scratch = control_specs(lapp)
    assert [s.method for s in finetuned] == ["magnitude", "random"]
    assert "budget.finetune_samples=70000" in finetuned[0].overrides
    assert scratch.method == "scratch"
    assert "method.widths={layer1.0.conv1.conv:8,layer2.0.conv1.conv:18}" in scratch.overrides
    assert {"method.epochs=14", "method.bypass=conv1x1", "method.warmup_epochs=2.0"} <= set(
        scratch.overrides
    )
    with pytest.raises(ValueError, match="no train_samples"):
        control_specs(rec(train_samples=None))


@pytest.mark.parametrize(
    ("samples", "batch", "expected"),
    [
        (10_000, 128, (2, None)),  # whole epochs
        (7_500, 128, (2, 30)),  # 2 epochs of ceil(3750/128) = 30 batches
        (500, 128, (1, 4)),  # CaP's calibration read: 4 batches of one epoch
        (0, 128, (0, None)),
    ],
)
def test_finetune_samples_as_epochs_and_batches(samples, batch, expected):
    assert budget_epochs(samples, SPLIT, batch) == expected


def test_shortened_epochs_are_counted_as_read():
    u = TrainUsage(SPLIT)
    u.add_passes(2, 30 * 128)
    assert u.to_dict() == {"seen": 7_680, "distinct": SPLIT}  # 2 × 3,840 read ≥ the split
    u = TrainUsage(SPLIT)
    u.add_passes(1, 4 * 128)
    assert u.to_dict() == {"seen": 512, "distinct": 512}


def test_pairing_by_seed_and_baseline_hash():
    methods = [rec(seed=s, top1=t) for s, t in [(0, 0.80), (1, 0.82), (2, 0.79)]]
    controls = [
        control(seed=0, top1=0.78),  # matched: Δ +2 pt
        control(seed=1, top1=0.79),  # matched: Δ +3 pt
        control(seed=2, top1=0.70, base_hash="other"),  # another baseline: never paired
        control(seed=0, top1=0.10, samples=0, finetune_samples=None),  # another training length
    ]
    got = [pair(m, controls, "magnitude") for m in methods]
    assert [p.status for p in got] == ["matched", "matched", "no matched control"]
    assert got[0].delta() == pytest.approx(0.02) and got[1].delta() == pytest.approx(0.03)
    rows = next(iter(aggregate(methods + controls).values()))
    (h,) = headline(rows)
    assert h.level == 50 and h.paired["magnitude"].diffs == pytest.approx([0.02, 0.03])
    text = cell(h.paired["magnitude"], 100)
    assert text == "+2.50 ± 0.71 (n=2), 1 seed(s) unmatched"
    assert cell(h.paired["random"], 100) == "no matched control yet"
    # |2.5| ≤ 12.71 · 0.71 / √2 = 6.35 pt: within noise
    assert summary_words(h) == "within noise of magnitude; no matched random control yet"


def test_an_infeasible_match_pairs_with_the_nearest_feasible_control_and_says_so():
    m = rec(seed=0, achieved=0.86)
    asked = control("random", seed=0, achieved=0.83, target=control_target(m))  # could not reach
    other = control("random", seed=0, achieved=0.83, target=0.83)  # not asked for this match
    assert pair(m, [other], "random").status == "no matched control"
    p = pair(m, [asked, other], "random")
    assert p.status == "nearest feasible" and p.control is asked
    rows = next(iter(aggregate([m, asked]).values()))
    (h,) = headline(rows)
    assert "nearest feasible control at −83.0 % MACs" in cell(h.paired["random"], 100)
    near = control("random", seed=0, achieved=0.851, target=control_target(m))  # within 1 pt
    assert pair(m, [asked, near], "random").control is near
    lowered = control("random", seed=0, achieved=0.83, target=0.83, config={"matched_to": 0.86})
    assert pair(m, [lowered], "random").status == "nearest feasible"  # the command's note


def test_the_scratch_control_pairs_by_architecture_and_total_training():
    widths = {"layer1.0.conv1.conv": 8}
    lapp = rec("lapp", compress=70_000, finetune=0, start="scratch", widths=widths)
    good = rec("scratch", compress=70_000, finetune=0, start="scratch", widths=widths, top1=0.7)
    wrong = rec("scratch", compress=70_000, finetune=0, start="scratch", widths={"x": 3})
    short = rec("scratch", compress=35_000, finetune=0, start="scratch", widths=widths)
    assert pair(lapp, [wrong, short], "scratch").status == "no matched control"
    p = pair(lapp, [wrong, short, good], "scratch")
    assert p.control is good and p.delta() == pytest.approx(0.10)


def test_noise_rule_is_a_paired_t_test():
    assert beyond_noise([0.020, 0.021, 0.019])  # |0.02| > 4.30 · 0.001 / √3
    assert not beyond_noise([0.02, -0.01, 0.03])
    assert not beyond_noise([0.05])  # one seed cannot be told from noise


def test_only_the_newest_code_version_of_a_point_is_current():
    old = [rec(seed=s, git_commit="old", time="2026-01-01") for s in range(3)]
    new = [rec(seed=s, git_commit="new", time="2026-02-01") for s in range(2)]
    other = [rec("spp", seed=0, git_commit="old", time="2026-01-01")]  # no newer version
    failed = [rec(seed=5, status="failed", git_commit="old", time="2026-01-01")]
    current, superseded = split_superseded(old + new + other + failed)
    assert superseded == old
    assert sorted(r["run_id"] for r in current) == sorted(r["run_id"] for r in new + other + failed)
    (rows,) = aggregate(current).values()
    assert not any(row.flags for row in rows)  # nothing "not pooled"


def test_finetune_samples_joins_the_point_id_only_when_set(tmp_path):
    from omegaconf import OmegaConf

    from prunebench.running.pipeline import point_id
    from tests.conftest import make_cfg

    def pid(*o):
        return point_id(OmegaConf.to_container(make_cfg(tmp_path, *o), resolve=True))

    plain = pid()
    cfg = OmegaConf.to_container(make_cfg(tmp_path), resolve=True)
    del cfg["budget"]["finetune_samples"]  # a config from before the key existed
    assert point_id(cfg) == plain
    assert pid("budget.finetune_samples=500") != plain != pid("budget.finetune_samples=0")


def test_a_baseline_retrained_on_another_thread_count_is_never_paired():
    # Same hash, other weights: ResNet-50's stand-in gave 34.65 % on one thread, 31.55 % on two.
    m = rec(seed=0, top1=0.80)
    other = control(seed=0, top1=0.70)
    other["baseline"] = {
        **other["baseline"],
        "test": {"test/top1": 0.81},
        "trained_by": {"threads": 2},
    }
    same = control(seed=0, top1=0.78)
    assert pair(m, [other], "magnitude").status == "no matched control"
    assert pair(m, [other, same], "magnitude").delta() == pytest.approx(0.02)
    (line,) = baseline_conflicts([m, other, same, control(seed=1)])
    assert line.startswith(
        "cifar10_resnet20 (embedded, cpu) seed 0: records of baseline h0 disagree"
    )
    assert "threads 2" in line and '{"test/top1": 0.81}' in line and '{"test/top1": 0.85}' in line
    assert baseline_conflicts([m, same]) == []


def test_the_committed_records_of_one_baseline_share_its_weights():
    records, problems = load_records(Path(__file__).resolve().parents[1] / "results")
    assert not problems and len(records) > 100
    assert baseline_conflicts(split_superseded(records)[0]) == []
