"""Scale on existing engines: Lightning DDP (2 CPU processes, gloo), Hydra's submitit launcher,
and sweeps that skip points whose record exists."""

from __future__ import annotations

import re
from pathlib import Path

from prunebench.reporting.records import checkpoint_file, read_record
from prunebench.running.pipeline import Pipeline
from prunebench.running.validate import weights_sha256
from tests.conftest import records, run_py

RANK_LINE = re.compile(r"rank (\d): compressed model sha256 ([0-9a-f]{64}) \(ranks agree\)")


def test_ddp_ranks_agree_and_rank_zero_writes_once(tmp_path):
    """KCP (decided once per rank from identical weights) and SPP (masks sampled each step,
    seeded by step) under DDP with 2 processes: both ranks hold the same compressed model."""
    import prunebench
    from prunebench.running.checkpoint import read_checkpoint

    one_shot = ("method=kcp", "method.step_reduction=0.5", "method.finetune_epochs_per_step=0")
    for method in (one_shot, ("method=spp",)):
        out = run_py(tmp_path, "trainer=ddp_cpu", *method)
        assert out.returncode == 0, out.stderr[-3000:]
        ranks = dict(RANK_LINE.findall(out.stdout))
        assert set(ranks) == {"0", "1"} and ranks["0"] == ranks["1"], out.stdout[-2000:]
        assert out.stdout.count("record: ") == 1  # rank 0's summary only
    recs = records(tmp_path)
    assert sorted(recs) == ["kcp", "spp"]
    assert len(list((tmp_path / "results").rglob("*.json"))) == 2
    for rec in recs.values():
        digest = rec["weights_sha256"]
        assert rec["distributed"] == {"world_size": 2, "weights_sha256": [digest, digest]}
        assert rec["achieved_macs_reduction"] > 0.45
        # what rank 0 saved is what every rank computed
        blob = read_checkpoint(checkpoint_file(rec))
        assert weights_sha256(prunebench.load(checkpoint_file(rec)), blob["plan"]) == digest
    assert recs["spp"]["baseline"]["source"] == "cache"  # the DDP-trained baseline, cached once
    assert not list((tmp_path / "runs" / "resume").rglob("*.ckpt"))  # cleared after each stage


def test_submitit_local_sweep_then_rerun_skips_every_point(tmp_path):
    out = run_py(tmp_path, "-m", "hydra/launcher=submitit_local", "method=dense,random")
    assert out.returncode == 0, out.stderr[-3000:]
    recs = records(tmp_path)
    assert sorted(recs) == ["dense", "random"]
    assert all(r["status"] == "ok" for r in recs.values())
    # two jobs at once: one trained the baseline under the lock, the other waited and read it
    assert sorted(r["baseline"]["source"] for r in recs.values()) == ["cache", "trained"]
    assert "sweep: 2 points — 2 ran, 0 skipped" in out.stdout

    again = run_py(tmp_path, "-m", "method=dense,random")  # the basic launcher this time
    assert again.returncode == 0, again.stderr[-3000:]
    assert "sweep: 2 points — 0 ran, 2 skipped" in again.stdout
    assert {r["run_id"] for r in records(tmp_path).values()} == {r["run_id"] for r in recs.values()}


def test_force_reruns_and_overwrite_is_its_alias(cfg_factory, capsys):
    first = Pipeline(cfg_factory("method=dense")).run()
    assert Pipeline(cfg_factory("method=dense")).run()["run_id"] == first["run_id"]
    assert "pass force=true" in capsys.readouterr().out
    forced = Pipeline(cfg_factory("method=dense", "force=true")).run()
    aliased = Pipeline(cfg_factory("method=dense", "overwrite=true")).run()
    assert len({first["run_id"], forced["run_id"], aliased["run_id"]}) == 3
    assert forced["point_id"] == aliased["point_id"] == first["point_id"]  # force: not hashed
    path = next(Path(first["config"]["paths"]["results_dir"]).rglob("*.json"))
    assert read_record(path)["run_id"] == aliased["run_id"]


def test_an_invalid_record_is_run_again(cfg_factory, capsys):
    first = Pipeline(cfg_factory("method=dense")).run()
    path = next(Path(first["config"]["paths"]["results_dir"]).rglob("*.json"))
    path.write_text('{"schema_version": 1, "status": "ok"}')  # valid JSON, not a record
    again = Pipeline(cfg_factory("method=dense")).run()
    assert "running the point again" in capsys.readouterr().out
    assert read_record(path)["run_id"] == again["run_id"] != first["run_id"]
