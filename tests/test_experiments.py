"""``conf/experiment/*.yaml``: each composes, names an existing claim, task and method, and sets
the claim's target in our MACs convention; bad input is one line; the controls follow a sweep."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from prunebench.reporting.claims import load_claims, macs_reduction
from prunebench.reporting.leaderboard import load_records
from prunebench.running.controls_callback import carried_overrides, control_launches
from tests.conftest import ROOT, TINY, env

EXPERIMENTS = sorted((ROOT / "conf" / "experiment").glob("*.yaml"))
CLAIMS = load_claims(ROOT / "results" / "claims.yaml")
# what an experiment may set: keys of the task, data, trainer or budget set there would change the
# baseline without reaching the controls, which inherit only the command line's
EXPERIMENT_KEYS = {"defaults", "method", "target", "experiment", "hydra"}


def _choice(raw: dict, group: str) -> str:
    for entry in raw["defaults"]:
        if isinstance(entry, dict) and f"override /{group}" in entry:
            return entry[f"override /{group}"]
    raise AssertionError(f"no override of /{group} in the defaults list")


def _alnum(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_every_experiment_composes_and_matches_its_claim(path):
    raw = yaml.safe_load(path.read_text())
    task = _choice(raw, "task")
    if not (ROOT / "conf" / "task" / f"{task}.yaml").exists():
        pytest.skip(f"conf/task/{task}.yaml does not exist yet (its task is added separately)")
    assert path.read_text().startswith("# @package _global_\n")
    assert set(raw) <= EXPERIMENT_KEYS, set(raw) - EXPERIMENT_KEYS
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", [f"+experiment={path.stem}"], return_hydra_config=True)
    exp = cfg.experiment
    assert exp.name == path.stem and cfg.task.name == task
    method, index = exp.claim.split("/")
    assert cfg.method.name == method and (ROOT / "conf" / "method" / f"{method}.yaml").exists()
    claim = CLAIMS["methods"][method]["claims"][int(index)]
    if claim["task"] is None:  # a model the claims file names in words (e.g. "AlexNet (ImageNet)")
        assert _alnum(claim["model"].split()[0]) in _alnum(task), (claim["model"], task)
    else:
        assert claim["task"] == task
    for key, value in claim.get("hparams", {}).items():
        assert cfg.method[key] == value, key
    converted, how = macs_reduction(claim)
    if converted is None:  # not a MACs figure: the experiment says what it stands in for
        assert exp.stand_in, f"{path.stem}: {how}, and no stand_in says what the target is"
    else:
        assert exp.stand_in is None
        assert cfg.target.macs_reduction == round(converted, 3), how
    assert (cfg.budget.name, cfg.data.source) == ("paper", "disk")
    assert cfg.hydra.sweeper.params == {"seed": "0,1,2"}
    target = cfg.hydra.callbacks.sweep_summary._target_
    assert target == "prunebench.running.controls_callback.SweepThenControls"


def test_every_claim_about_a_task_we_build_has_an_experiment():
    named = set()
    for path in EXPERIMENTS:
        named.add(yaml.safe_load(path.read_text())["experiment"]["claim"])
    for method, entry in CLAIMS["methods"].items():
        for i, claim in enumerate(entry["claims"] if isinstance(entry["claims"], list) else []):
            if claim["task"] and (ROOT / "conf" / "task" / f"{claim['task']}.yaml").exists():
                assert f"{method}/{i}" in named, f"{method}/{i}: {claim['words']}"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "run.py",
        *args,
        f"paths.results_dir={tmp_path / 'results'}",
        f"paths.runs_dir={tmp_path / 'runs'}",
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env())


def _one_error_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    (line,) = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    return line


def test_an_unknown_experiment_is_hydras_error_listing_them_in_one_line(tmp_path):
    line = _one_error_line(_run(tmp_path, "+experiment=nosuch", "logger=none"))
    assert "Could not find 'experiment/nosuch'" in line
    assert "trp_cifar10_resnet20_channel, trp_cifar10_resnet20_spatial" in line
    assert not (tmp_path / "results").exists()


def test_an_experiment_on_disk_without_a_root_names_the_layout(tmp_path):
    line = _one_error_line(
        _run(tmp_path, "+experiment=trp_cifar10_resnet20_channel", *TINY[:2], "seed=0")
    )
    assert "data.root=None" in line and "cifar-10-batches-py" in line and "data=embedded" in line
    assert not list((tmp_path / "results").rglob("*.json"))


def test_the_controls_inherit_the_launcher_and_the_baseline_overrides_only():
    task = [
        "+experiment=x",
        "seed=0,1",
        "method.e=0.8",
        "target.macs_reduction=0.6",
        "task.pretrained=/w/r50.pth",
        "data.root=/d",
        "trainer=gpu",
        "trainer.devices=2",
        "budget.data.train=64",
        "budget.finetune_samples=9",
        "logger=none",
        "paths.runs_dir=/r",
        "force=true",
        "budget=smoke",
    ]
    hydra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweep.dir=/s"]
    assert carried_overrides(task, hydra) == [
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "task.pretrained=/w/r50.pth",
        "data.root=/d",
        "trainer=gpu",
        "trainer.devices=2",
        "budget.data.train=64",
        "logger=none",
    ]


def test_only_ok_records_of_pruning_methods_get_controls():
    def rec(method, status="ok", seed=0):
        return {
            "method": method,
            "status": status,
            "task": "t",
            "budget": "smoke",
            "data_source": "embedded",
            "_path": f"/r/{method}-{status}-{seed}.json",
        }

    records = [rec("trp"), rec("trp", seed=1), rec("trp", "failed"), rec("dense"), rec("random")]
    assert control_launches(records) == {
        ("t", "trp", "smoke", "embedded"): ["/r/trp-ok-0.json", "/r/trp-ok-1.json"]
    }


@pytest.mark.slow  # three run.py processes and controls.py (~1–2 min on 2 loaded cores)
def test_an_experiment_at_smoke_runs_its_points_then_their_controls(tmp_path):
    out = _run(
        tmp_path,
        "-m",
        "+experiment=trp_cifar10_resnet20_channel",
        "budget=smoke",
        "data=embedded",
        "seed=0",  # the command line's seed replaces the experiment's sweep over 0,1,2
        *TINY[1:],
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records, problems = load_records(tmp_path / "results")
    assert not problems
    by_method = {r["method"]: r for r in records}
    assert sorted(by_method) == ["magnitude", "random", "trp"] and len(records) == 3
    trp = by_method["trp"]
    assert trp["seed"] == 0 and trp["config"]["experiment"]["claim"] == "trp/0"
    assert trp["config"]["method"]["scheme"] == "channel" and trp["method_start"] == "scratch"
    post = trp["train_samples"]["compress"]["seen"] + trp["train_samples"]["finetune"]["seen"]
    for name in ("magnitude", "random"):
        c = by_method[name]
        assert c["baseline"]["hash"] == trp["baseline"]["hash"]
        assert c["finetune_samples"] == post
        assert c["target_macs_reduction"] == round(trp["achieved_macs_reduction"], 3)
    assert "no scratch control: its plan has lowrank entries" in out.stderr
    summaries = [ln for ln in out.stdout.splitlines() if ln.startswith("sweep: ")]
    assert summaries[0].startswith("sweep: 1 points — 1 ran") and len(summaries) == 2
