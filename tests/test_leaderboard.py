"""The leaderboard on hand-made records: exact aggregation, tables kept apart, malformed records
skipped by name, stable output, and the claims file's schema."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from prunebench.errors import RecordError
from prunebench.reporting.claims import load_claims, macs_reduction, validate_claims
from prunebench.reporting.leaderboard import aggregate, load_records
from prunebench.reporting.markdown import render_markdown
from prunebench.reporting.plots import pareto_front
from prunebench.reporting.records import write_record
from scripts.leaderboard import main as leaderboard_main
from tests.test_records import minimal_record

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = ROOT / "results" / "claims.yaml"


def rec(
    method="magnitude",
    seed=0,
    top1=0.7,
    base=0.75,
    budget="cpu",
    data="embedded",
    recipe="R",
    code="c0",
    target=0.5,
    widths=None,
    **over,
):
    r = minimal_record(
        run_id=f"{method}-{seed}-{top1}",
        method=method,
        seed=seed,
        budget=budget,
        data_source=data,
        target_macs_reduction=target,
        achieved_macs_reduction=target + 0.002,
        git_commit=code,
        test={"test/top1": top1},
        baseline={
            "hash": f"h{seed}",
            "recipe_hash": recipe,
            "source": "cache",
            "test": {"test/top1": base},
        },
        macs={"dense": 1000, "compressed": 500},
        params={"dense": 200, "compressed": 100},
        plan_widths={"layer1.0.conv1": 8} if widths is None else widths,
        latency={
            "device": "cpu",
            "batch": 64,
            "dense_median_ms": 2.0,
            "compressed_median_ms": 1.0,
            "speedup": 2.0,
            "order": "interleaved",
        },
    )
    r.update(over)
    return r


def test_mean_std_n_and_delta_are_exact():
    recs = [
        rec(seed=s, top1=t, base=b)
        for s, t, b in [(0, 0.70, 0.75), (1, 0.72, 0.74), (2, 0.68, 0.76)]
    ]
    (table,) = aggregate(recs).values()
    (row,) = table
    x = row.summary()
    assert x["n"] == 3
    assert x["metric"] == pytest.approx(0.70)
    assert x["metric_std"] == pytest.approx(statistics.stdev([0.70, 0.72, 0.68]))  # 0.02
    assert x["delta"] == pytest.approx(((0.70 - 0.75) + (0.72 - 0.74) + (0.68 - 0.76)) / 3)  # −0.05
    assert x["achieved"] == pytest.approx(0.502) and x["speedup"] == 2.0


def test_tiers_data_sources_recipes_and_code_are_kept_apart():
    recs = [
        rec(seed=0),
        rec(seed=1),
        rec(seed=2, budget="smoke"),
        rec(seed=3, data="disk"),
        rec(seed=4, recipe="OTHER"),
        rec(seed=5, code="c1"),
    ]
    tables = aggregate(recs)
    assert set(tables) == {
        ("cifar10_resnet20", "embedded", "cpu"),
        ("cifar10_resnet20", "embedded", "smoke"),
        ("cifar10_resnet20", "disk", "cpu"),
    }
    rows = tables[("cifar10_resnet20", "embedded", "cpu")]
    assert sorted(r.n for r in rows) == [1, 1, 2]
    assert all(r.flags and r.flags[0].startswith("not pooled") for r in rows)
    assert not tables[("cifar10_resnet20", "disk", "cpu")][0].flags
    md = render_markdown(tables, load_claims(CLAIMS), [])
    assert md.count("## cifar10_resnet20") == 3


def test_rows_without_finetuning_pool_apart_and_say_so():
    recs = [rec(seed=s, finetune_epochs=4) for s in (0, 1)]
    recs += [rec(seed=s, top1=0.3, finetune_epochs=0) for s in (0, 1)]
    (rows,) = aggregate(recs).values()
    assert sorted((r.finetune_epochs, r.n) for r in rows) == [(0, 2), (4, 2)]
    assert not any(r.flags for r in rows)  # two points, not one split pool or repeated seeds
    labels = {r.label(rows) for r in rows}
    assert labels == {"magnitude (finetune_epochs=0)", "magnitude (finetune_epochs=4)"}
    (alone,) = aggregate(recs[:2]).values()
    assert alone[0].label(alone) == "magnitude"  # nothing to tell apart


def test_filters_and_uncompressed_rows():
    recs = [
        rec(seed=0),
        rec(method="dense", seed=0, top1=0.75, widths={}, target=0.5),
        rec(seed=1, budget="smoke"),
    ]
    tables = aggregate(recs, tier="cpu", data="embedded", task="cifar10_resnet20")
    (rows,) = tables.values()
    assert [r.method for r in rows] == ["dense", "magnitude"]  # no-compression rows first
    assert rows[0].target is None
    assert aggregate(recs, task="imagenet_resnet50") == {}


def test_markdown_is_stable_and_shows_claims():
    recs = [rec(seed=s, top1=0.7 + s / 100) for s in range(3)] + [
        rec(method="trp", seed=0, target=0.54)
    ]
    claims = load_claims(CLAIMS)
    a = render_markdown(aggregate(recs), claims, [])
    b = render_markdown(aggregate(list(reversed(recs))), claims, [])
    assert a == b
    assert "| magnitude | 50.0 % | 50.2 % | 71.00 ± 1.00 (3) | -4.00 ± 1.00 |" in a
    two = recs + [rec(seed=0, method_hparams={"allocation": "global"})]
    b2 = render_markdown(aggregate(two), claims, [])
    assert "| magnitude (allocation=global) |" in b2 and "| magnitude |" in b2
    assert "1 − 1/2.17 = −53.9 % MACs" in a  # TRP's speed-up converted to our convention
    assert "Paper claims for cifar10_resnet20" in a


def test_malformed_record_is_named_and_skipped(tmp_path, capsys):
    d = tmp_path / "records" / "cifar10_resnet20"
    write_record(rec(seed=0), d / "good.json")
    (d / "broken.json").write_text("{")
    bad = rec(seed=1)
    del bad["macs"]
    (d / "missing.json").write_text(json.dumps(bad))
    records, problems = load_records(tmp_path)
    assert len(records) == 1 and len(problems) == 2
    assert any("broken.json" in p for p in problems) and any(
        "missing.json" in p and "macs" in p for p in problems
    )
    code = leaderboard_main(["--results", str(tmp_path), "--claims", str(CLAIMS), "--publish"])
    assert code == 0
    assert "broken.json" in capsys.readouterr().err
    assert (tmp_path / "LEADERBOARD.md").read_text().count("broken.json") == 1
    assert (tmp_path / "plots" / "cifar10_resnet20.png").stat().st_size > 10_000


def test_empty_results_directory_gives_a_clear_message(tmp_path, capsys):
    assert leaderboard_main(["--results", str(tmp_path), "--publish"]) == 2
    assert "no records/ folder there" in capsys.readouterr().err
    (tmp_path / "records").mkdir()
    assert leaderboard_main(["--results", str(tmp_path), "--publish"]) == 2
    assert "no run records under" in capsys.readouterr().err
    assert not (tmp_path / "LEADERBOARD.md").exists()


def test_pareto_front_hand_computed():
    pts = [(10, 70), (20, 75), (15, 69), (30, 74), (5, 60)]
    assert pareto_front(pts, higher_is_better=True) == [(5, 60), (10, 70), (20, 75)]
    assert pareto_front([(10, 2.0), (20, 1.5), (15, 2.5)], higher_is_better=False) == [
        (10, 2.0),
        (20, 1.5),
    ]


def test_claims_file_validates_and_covers_every_method():
    data = load_claims(CLAIMS)
    methods = {p.stem for p in (ROOT / "conf" / "method").glob("*.yaml")}
    assert methods <= set(data["methods"])
    for name in ("kcp", "lapp", "spp", "cap", "trp"):
        assert isinstance(data["methods"][name]["claims"], list) and data["methods"][name]["claims"]
    for name, entry in data["methods"].items():
        assert entry["claims"] != "none" or entry["reason"], name


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["methods"]["trp"]["claims"][0].pop("source"), "missing"),
        (
            lambda d: d["methods"]["trp"]["claims"][0]["reduction"].update(quantity="gflops"),
            "quantity",
        ),
        (lambda d: d["methods"]["random"].pop("reason"), "without a `reason`"),
        (lambda d: d["methods"]["kcp"]["claims"][0].update(task=None), "model"),
        (lambda d: d["methods"]["cap"]["claims"][0]["stand_in"].pop("why"), "stand_in"),
    ],
)
def test_claims_schema_errors(edit, message):
    data = yaml.safe_load(CLAIMS.read_text())
    edit(data)
    with pytest.raises(RecordError, match=message):
        validate_claims(data)


def test_claim_conversions():
    c = {
        "reduction": {"quantity": "speedup", "value": 2.0, "bound": "="},
        "convention": "speedup_conv_macs",
    }
    assert macs_reduction(c)[0] == pytest.approx(0.5)
    c = {
        "reduction": {"quantity": "flops", "value": 0.556, "bound": "="},
        "convention": "flops_is_2macs",
    }
    assert (
        macs_reduction(c)[0] == pytest.approx(0.556)
        and "FLOPs counted as 2×MACs" in macs_reduction(c)[1]
    )
    c = {
        "reduction": {"quantity": "processing_time", "value": 0.95, "bound": "="},
        "convention": "none",
    }
    assert macs_reduction(c) == (None, "processing time 95.0 %: not a MACs figure")


def test_wandb_tables_are_logged_offline(tmp_path):
    d = tmp_path / "records" / "cifar10_resnet20"
    for s in range(2):
        write_record(rec(seed=s, top1=0.7 + s / 100), d / f"r{s}.json")
    runs = tmp_path / "runs"
    assert (
        leaderboard_main(
            [
                "--results",
                str(tmp_path),
                "--claims",
                str(CLAIMS),
                "--wandb",
                "--publish",
                "--runs-dir",
                str(runs),
            ]
        )
        == 0
    )
    (table,) = runs.glob("wandb/offline-run-*/files/media/table/leaderboard/**/*.table.json")
    data = json.loads(table.read_text())
    row = dict(zip(data["columns"], data["data"][0], strict=True))
    assert row["method"] == "magnitude" and row["n"] == 2
    assert row["metric"] == pytest.approx(0.705)


def test_claims_match_the_rows_hyper_parameters():
    from prunebench.reporting.claims import claims_for

    data = load_claims(CLAIMS)
    assert len(claims_for(data, "trp", "cifar10_resnet20")) == 2
    (spatial,) = claims_for(data, "trp", "cifar10_resnet20", {"scheme": "spatial", "e": 0.9})
    assert "spatial" in spatial["words"] and spatial["value"] == 90.62
    assert claims_for(data, "magnitude", "cifar10_resnet20", {}) == []


def test_latency_timed_dense_first_is_flagged():
    old = rec(seed=0)
    old["latency"] = {k: v for k, v in old["latency"].items() if k != "order"}
    (table,) = aggregate([old]).values()
    assert table[0].flags == ["latency timed dense-first: speed-up biased up"]
    (table,) = aggregate([rec(seed=0)]).values()
    assert table[0].flags == []


def test_records_without_the_finetune_field_get_it_from_their_stage_times():
    from prunebench.reporting.leaderboard import finetune_epochs

    old = rec(seed=0, config={"budget": {"finetune_epochs": 4}})
    old.pop("finetune_epochs", None)
    old["stage_seconds"] = {"baseline": 1.0, "compress": 0.1, "finetune": 2.0}
    assert finetune_epochs(old) == 4
    old["stage_seconds"] = {"baseline": 1.0, "compress": 0.1}
    assert finetune_epochs(old) == 0
    assert finetune_epochs(rec(seed=0, finetune_epochs=0)) == 0


def _write(tmp_path, records):
    d = tmp_path / "records" / "cifar10_resnet20"
    for i, r in enumerate(records):
        write_record(r, d / f"r{i}.json")


def test_a_filtered_view_never_overwrites_the_published_tables(tmp_path, capsys):
    _write(tmp_path, [rec(seed=s) for s in range(2)] + [rec(seed=0, budget="smoke")])
    (tmp_path / "LEADERBOARD.md").write_text("published")
    argv = ["--results", str(tmp_path), "--task", "cifar10_resnet20", "--tier", "smoke"]
    assert leaderboard_main(argv) == 0
    out = capsys.readouterr().out
    assert "tier: smoke" in out and "tier: cpu" not in out
    assert (tmp_path / "LEADERBOARD.md").read_text() == "published"
    assert not (tmp_path / "plots").exists()
    view = tmp_path / "views" / "r20.md"
    assert leaderboard_main([*argv, "--out", str(view)]) == 0
    assert "tier: smoke" in view.read_text()
    assert leaderboard_main([*argv, "--publish"]) == 2
    assert "--publish regenerates the whole published leaderboard" in capsys.readouterr().err
    assert (tmp_path / "LEADERBOARD.md").read_text() == "published"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--task", "nosuchtask"], ["--task 'nosuchtask'", "choices:", "cifar10_resnet20"]),
        (["--tier", "fast"], ["--tier 'fast'", "smoke"]),
        (["--results", "/sys", "--publish"], ["/sys", "no records/ folder"]),
        (["--out", "/sys/leaderboard.md"], ["/sys", "not writable"]),
        (["--claims", "nope.yaml"], ["--claims nope.yaml", "no such file"]),
    ],
)
def test_bad_arguments_are_one_line_and_write_nothing(tmp_path, capsys, argv, words):
    _write(tmp_path, [rec(seed=0)])
    before = sorted(p.name for p in tmp_path.rglob("*"))
    results = [] if "--results" in argv else ["--results", str(tmp_path)]
    assert leaderboard_main([*results, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert all(w in err for w in words), err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_smoke_and_failed_records_stay_out_of_the_tables_unless_asked(tmp_path, capsys):
    failed = rec(seed=3, status="failed", failure_reason="boom")
    _write(tmp_path, [rec(seed=0), rec(seed=1, budget="smoke"), failed])
    assert leaderboard_main(["--results", str(tmp_path)]) == 0  # no claims.yaml there: ours
    out = capsys.readouterr().out
    assert "tier: smoke" not in out and "Failed runs" not in out
    assert f"the user folder `{tmp_path}` (not the published ones)" in out
    assert leaderboard_main(["--results", str(tmp_path), "--include-smoke", "--failed"]) == 0
    out = capsys.readouterr().out
    assert "tier: smoke" in out and "Failed runs" in out and "boom" in out


def test_speed_up_is_shown_only_with_a_spread_and_a_sane_dense_check():
    from prunebench.reporting.markdown import trusted_speedup

    (rows,) = aggregate([rec(seed=0)]).values()
    assert trusted_speedup(rows[0], rows) == "—†"  # no spread recorded
    good = rec(seed=0)
    good["latency"] |= {"speedup_iqr": [1.9, 2.1], "trustworthy": True}
    dense = rec(method="dense", seed=0, widths={}, top1=0.75)
    dense["latency"] |= {"speedup": 1.04, "speedup_iqr": [1.0, 1.06], "trustworthy": True}
    (rows,) = aggregate([good, dense]).values()
    assert trusted_speedup(rows[1], rows) == "2.00× (IQR 1.90–2.10)"
    dense["latency"]["speedup"] = 3.9  # the dense model "faster" than itself: timing noise
    (rows,) = aggregate([good, dense]).values()
    assert trusted_speedup(rows[1], rows) == "—†"


def test_archive_moves_superseded_records_out_of_the_tables(tmp_path, capsys):
    old = [rec(seed=s, code="old", time="2026-01-01") for s in range(2)]
    new = [rec(seed=s, code="new", time="2026-02-01", run_id=f"n{s}") for s in range(2)]
    _write(tmp_path, old + new)
    assert leaderboard_main(["--results", str(tmp_path), "--archive"]) == 0
    out = capsys.readouterr().out
    assert "not pooled" not in out and "(2) |" in out
    archived = sorted(p.name for p in (tmp_path / "archive" / "records").rglob("*.json"))
    assert archived == ["r0.json", "r1.json"]  # the old code version's files
    assert len(list((tmp_path / "records").rglob("*.json"))) == 2


def test_committed_leaderboard_is_what_the_script_writes(tmp_path):
    out = tmp_path / "LEADERBOARD.md"
    assert leaderboard_main(["--out", str(out)]) == 0
    assert out.read_text() == (ROOT / "results" / "LEADERBOARD.md").read_text()


def test_one_version_archives_a_tasks_older_rows_even_where_no_point_was_rerun(tmp_path, capsys):
    old = [rec(seed=s, code="old", time="2026-01-01") for s in range(2)]
    old_kcp = [rec("kcp", s, code="old", time="2026-01-01", run_id=f"k{s}") for s in range(2)]
    new = [rec(seed=s, code="new", time="2026-02-01", run_id=f"n{s}") for s in range(2)]
    other = [rec(seed=0, code="old", time="2026-01-01", run_id="o0", task="cifar10_resnet56")]
    _write(tmp_path, old + old_kcp + new + other)
    argv = ["--results", str(tmp_path), "--one-version", "cifar10_resnet20"]
    assert leaderboard_main(argv) == 0
    out = capsys.readouterr().out
    assert "| kcp |" not in out.split("## cifar10_resnet56")[0]  # the old KCP rows left the table
    archived = sorted(p.name for p in (tmp_path / "archive" / "records").rglob("*.json"))
    assert archived == ["r0.json", "r1.json", "r2.json", "r3.json"]  # old magnitude and KCP
    left = sorted(p.name for p in (tmp_path / "records").rglob("*.json"))
    assert left == ["r4.json", "r5.json", "r6.json"]  # the new ones; another task's untouched
