"""The pipeline end to end at the smoke tier: determinism, the shared baseline cache, records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from prunebench.reporting.records import read_record
from prunebench.running.baseline import CACHE_FORMAT, load_or_train
from prunebench.running.pipeline import Pipeline


def test_same_seed_twice_gives_identical_numbers(tmp_path):
    from tests.conftest import make_cfg

    a = Pipeline(make_cfg(tmp_path / "a", "method=random", "seed=3")).run()
    b = Pipeline(make_cfg(tmp_path / "b", "method=random", "seed=3")).run()
    assert a["baseline"]["source"] == b["baseline"]["source"] == "trained"
    assert a["test"] == b["test"]
    assert a["baseline"]["test"] == b["baseline"]["test"]
    assert a["plan_widths"] == b["plan_widths"]
    assert a["point_id"] == b["point_id"]


def test_methods_share_the_cached_baseline_and_corrupt_cache_is_rebuilt(cfg_factory, capsys):
    dense = Pipeline(cfg_factory("method=dense")).run()
    mag = Pipeline(cfg_factory("method=magnitude", "target.macs_reduction=0.6")).run()
    assert dense["baseline"]["source"] == "trained" and mag["baseline"]["source"] == "cache"
    assert dense["baseline"]["hash"] == mag["baseline"]["hash"]
    # Who trained the cached baseline travels with it: the cache read reports the training
    # run's commit, threads and time, not its own.
    trained_by = dense["baseline"]["trained_by"]
    assert mag["baseline"]["trained_by"] == trained_by
    assert trained_by["git_commit"] == dense["git_commit"]
    assert trained_by["threads"] == dense["environment"]["threads"] == torch.get_num_threads()
    assert trained_by["torch"] == torch.__version__ and "gpu" not in dense["environment"]
    # Dense is the baseline itself: no compression, same test numbers as the cached baseline.
    assert dense["achieved_macs_reduction"] == 0.0
    assert dense["test"] == dense["baseline"]["test"]
    assert abs(mag["achieved_macs_reduction"] - 0.6) <= 0.01
    assert mag["macs"]["compressed"] == mag["macs"]["realised"] < mag["macs"]["dense"]
    assert mag["params"]["compressed"] < mag["params"]["dense"]

    cache = next(Path(mag["config"]["paths"]["cache_dir"]).glob("baselines/*.pt"))
    cache.write_bytes(b"\x00garbage")
    capsys.readouterr()
    rnd = Pipeline(cfg_factory("method=random")).run()
    assert "is corrupt" in capsys.readouterr().out
    assert (
        rnd["baseline"]["source"] == "trained"
        and rnd["baseline"]["hash"] == dense["baseline"]["hash"]
    )
    assert rnd["baseline"]["test"] == dense["baseline"]["test"]  # retrained deterministically
    assert cache.stat().st_size > 1000  # the rebuilt file replaced the garbage


def test_existing_record_is_kept_unless_overwrite(cfg_factory):
    first = Pipeline(cfg_factory("method=dense")).run()
    path = Path(first["config"]["paths"]["results_dir"]) / "records" / "cifar10_resnet20"
    files = list(path.glob("*.json"))
    assert len(files) == 1
    again = Pipeline(cfg_factory("method=dense")).run()
    assert again["run_id"] == first["run_id"]
    third = Pipeline(cfg_factory("method=dense", "overwrite=true")).run()
    assert third["run_id"] != first["run_id"]
    assert read_record(files[0])["run_id"] == third["run_id"]


def test_record_contents(cfg_factory):
    rec = Pipeline(cfg_factory("method=magnitude", "task=cifar10_resnet56")).run()
    assert rec["task"] == "cifar10_resnet56" and rec["macs"]["dense"] == 125_485_696
    assert rec["method_hparams"] == {"allocation": "uniform"}
    assert set(rec["stage_seconds"]) == {"baseline", "compress", "finetune", "evaluate"}
    assert rec["finetune_epochs"] == 1 and rec["train_samples"]["compress"]["seen"] == 0
    assert rec["latency"]["batch"] == 8 and rec["latency"]["speedup"] > 0
    assert 0.0 <= rec["test"]["test/top1"] <= 1.0
    assert rec["data_source"] == "embedded" and rec["budget"] == "smoke"
    json.dumps(rec)  # plain JSON


@pytest.mark.parametrize("bad", ["0", "1.2"])
def test_bad_target_is_refused_before_anything_runs(cfg_factory, bad):
    from prunebench.errors import ConfigError

    with pytest.raises(ConfigError, match=f"target.macs_reduction={bad}"):
        Pipeline(cfg_factory(f"target.macs_reduction={bad}"))


METHODS = sorted(
    p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "method").glob("*.yaml")
)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_end_to_end(cfg_factory, method):
    rec = Pipeline(cfg_factory(f"method={method}", "target.macs_reduction=0.4")).run()
    assert rec["status"] == "ok" and rec["method"] == method
    if rec["plan_widths"]:
        if (
            rec["target_macs_reduction"] is not None
        ):  # else the method sets its own (TRP's σ ≥ 0.05)
            assert abs(rec["achieved_macs_reduction"] - 0.4) <= 0.01
        assert 0 < rec["achieved_macs_reduction"] < 1
        assert rec["macs"]["compressed"] <= rec["macs"]["realised"] <= rec["macs"]["dense"]
    else:
        assert rec["achieved_macs_reduction"] == 0.0
    assert 0.0 <= rec["test"]["test/top1"] <= 1.0
    used = rec["train_samples"]  # the finetune stage reads the whole split once per epoch
    assert used["finetune"] == {
        "seen": rec["finetune_epochs"] * used["split"],
        "distinct": used["split"] if rec["finetune_epochs"] else 0,
    }
    assert (rec["finetune_epochs"] == 0) == ("finetune" not in rec["stage_seconds"])


def test_a_failed_run_leaves_a_failed_record_and_reruns(cfg_factory, monkeypatch):
    from methods.magnitude import Magnitude

    def boom(self, ctx):
        raise RuntimeError("scoring exploded")

    monkeypatch.setattr(Magnitude, "compress", boom)
    with pytest.raises(RuntimeError, match="exploded"):
        Pipeline(cfg_factory("method=magnitude")).run()
    (path,) = (Path(cfg_factory()["paths"]["results_dir"]) / "records").rglob("*.json")
    failed = read_record(path)
    assert failed["status"] == "failed" and "scoring exploded" in failed["failure_reason"]
    monkeypatch.undo()
    ok = Pipeline(cfg_factory("method=magnitude")).run()  # a failed point is run again
    assert ok["status"] == "ok" and read_record(path)["run_id"] == ok["run_id"]
    monkeypatch.setattr(Magnitude, "compress", boom)
    with pytest.raises(RuntimeError):
        Pipeline(cfg_factory("method=magnitude", "overwrite=true")).run()
    assert (
        read_record(path)["run_id"] == ok["run_id"]
    )  # an ok record is never replaced by a failure


def test_baseline_key_covers_what_determines_the_baseline(cfg_factory):
    from omegaconf import OmegaConf

    from prunebench.running.baseline import baseline_key

    def key(*overrides: str, with_seed: bool = True) -> str:
        return baseline_key(
            OmegaConf.to_container(cfg_factory(*overrides), resolve=True), with_seed
        )

    base = key()
    assert key("method=kcp", "target.macs_reduction=0.7", "budget.finetune_epochs=9") == base
    assert key("task.paper.compress_epochs=1") == base  # the paper block reaches it via the budget
    assert key("seed=1") != base and key("seed=1", with_seed=False) == key(with_seed=False)
    assert key("budget.baseline_epochs=2") != base and key("task.depth=56") != base


def test_round_to_rounds_kept_widths_and_joins_the_point_id_only_when_it_rounds(cfg_factory):
    from prunebench.running.pipeline import point_id

    common = ("method=magnitude", "method.allocation=global", "target.macs_reduction=0.3")
    exact = Pipeline(cfg_factory(*common)).run()
    rounded = Pipeline(cfg_factory(*common, "target.round_to=8")).run()
    assert any(w % 8 for w in exact["plan_widths"].values())  # 0.3 of 16/32/64 is not on 8s
    assert all(w % 8 == 0 for w in rounded["plan_widths"].values())
    assert rounded["achieved_macs_reduction"] >= 0.3 - 0.01
    assert rounded["config"]["target"]["round_to"] == 8
    assert rounded["point_id"] != exact["point_id"]
    cfg = dict(exact["config"])
    cfg["target"] = {"macs_reduction": 0.3}  # a config from before the option existed
    assert point_id(cfg) == exact["point_id"]


def test_a_cache_file_from_before_provenance_reads_with_trained_by_none(tmp_path):
    model = nn.Linear(3, 2)
    path = tmp_path / "baselines" / "k.pt"
    path.parent.mkdir()
    torch.save(
        {"format": CACHE_FORMAT, "state_dict": model.state_dict(), "metrics": {"val/a": 1.0}}, path
    )

    def train(m: nn.Module) -> dict[str, float]:
        raise AssertionError("a readable cache file must not be retrained")

    info = load_or_train(nn.Linear(3, 2), tmp_path, "k", train)
    assert info["source"] == "cache" and info["trained_by"] is None
    assert info["metrics"] == {"val/a": 1.0}
