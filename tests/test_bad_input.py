"""A catalogue of bad inputs: each is refused with one error naming the bad value (and the
choices, where there are choices) before anything trains, and leaves no record and no cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import HydraException

from prunebench.errors import PrunebenchError
from prunebench.pipeline import Pipeline
from tests.conftest import make_cfg

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A cut file, a state dict of the wrong architecture and a folder nobody may write to."""
    d = tmp_path_factory.mktemp("inputs")
    garbage = d / "garbage.pt"
    garbage.write_bytes(b"\x80\x02not a pickle at all")
    from tasks.classification.resnet_cifar import CifarResNet

    wrong = d / "resnet20.pt"
    torch.save(CifarResNet(20, 10, "A").state_dict(), wrong)
    readonly = d / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    if os.access(readonly, os.W_OK):  # root ignores modes; a read-only mount does not
        readonly = Path("/sys")
    return {"garbage": garbage, "wrong": wrong, "readonly": readonly}


# (overrides, words the one error must contain). {garbage}/{wrong}/{readonly} are filled in.
CATALOGUE = [
    (["target.macs_reduction=1.5"], ["target.macs_reduction=1.5", "(0, 1)"]),
    (["target.macs_reduction=0"], ["target.macs_reduction=0", "(0, 1)"]),
    (["target.macs_reduction=abc"], ["target.macs_reduction='abc'"]),
    (["target.round_to=0"], ["target.round_to=0", "integer ≥ 1"]),
    (["target.round_to=8.5"], ["target.round_to=8.5", "integer ≥ 1"]),
    (["method=kcp", "target.round_to=8"], ["target.round_to=8", "'kcp'", "magnitude, random"]),
    (["seed=-1"], ["seed=-1", "integer ≥ 0"]),
    (["seed=abc"], ["seed='abc'", "integer"]),
    (["seed=1.5"], ["seed=1.5", "integer"]),
    (["budget.finetune_epochs=-1"], ["budget.finetune_epochs=-1", "≥ 0"]),
    (["budget.baseline_epochs=-2"], ["budget.baseline_epochs=-2", "≥ 0"]),
    (["budget.compress_epochs=many"], ["budget.compress_epochs='many'"]),
    (["budget.data.train=0"], ["budget.data.train=0", "≥ 1"]),
    (["budget.latency.repeats=0"], ["budget.latency.repeats=0", "≥ 1"]),
    (["force=maybe"], ["force='maybe'", "true or false"]),
    (["+trainer.bogus=1"], ["trainer.bogus", "unknown", "accelerator"]),
    (["+trainer.max_epochs=3"], ["trainer.max_epochs", "set by the pipeline"]),
    (["+method.bogus=1"], ["bogus", "methods.magnitude.Magnitude", "allocation"]),
    (["method=kcp", "method.group=bogus"], ["method.group='bogus'", "input_channel"]),
    (["method=trp", "method.scheme=bogus"], ["method.scheme='bogus'", "channel", "spatial"]),
    (["method=cap", "method.mode=bogus"], ["method.mode='bogus'", "macs_target", "floor"]),
    (["method=spp", "method.restore=bogus"], ["method.restore='bogus'", "forward", "step"]),
    (["task.recipe.baseline.milestones=[81/0]"], ["recipe milestone '81/0'", "(0, 1]"]),
    (["method=lapp", "method.bypass=bogus"], ["method.bypass='bogus'", "conv1x1"]),
    (["data.source=bogus"], ["data.source='bogus'", "embedded", "disk"]),
    (["data=disk", "data.root=/no/such/cifar"], ["/no/such/cifar", "cifar-10-batches-py"]),
    (
        ["task=imagenet_resnet18", "task.pretrained=/no/such/resnet18.pth"],
        ["/no/such/resnet18.pth", "is not a file"],
    ),
    (
        ["task=imagenet_resnet18", "task.pretrained={wrong}"],
        ["{wrong}", "not a torchvision resnet18 state dict"],
    ),
    (
        ["task=imagenet_resnet18", "task.pretrained={garbage}"],
        ["{garbage}", "not a torchvision resnet18 state dict"],
    ),
    (["paths.results_dir={readonly}"], ["paths.results_dir", "{readonly}"]),
]
HYDRA_CATALOGUE = [  # refused by Hydra while composing, naming the key or listing the choices
    (["bogus_key=1"], ["bogus_key"]),
    (["method=nosuch"], ["method/nosuch", "magnitude", "kcp"]),
    (["task=nosuch"], ["task/nosuch", "cifar10_resnet20"]),
    (["budget=nosuch"], ["budget/nosuch", "smoke"]),
    (["trainer=nosuch"], ["trainer/nosuch", "ddp_cpu"]),
]


def _fill(items: list[str], files: dict[str, Path]) -> list[str]:
    return [s.format(**{k: str(v) for k, v in files.items()}) for s in items]


def _written(tmp_path: Path) -> list[Path]:
    """Records and caches (lock files and empty folders are not output)."""
    return [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")]


def test_catalogue_is_large_enough():
    assert len(CATALOGUE) + len(HYDRA_CATALOGUE) >= 20


@pytest.mark.parametrize("overrides, words", CATALOGUE, ids=lambda v: " ".join(v)[:60])
def test_bad_input_is_refused_before_anything_runs(tmp_path, files, overrides, words):
    cfg = make_cfg(tmp_path, *_fill(overrides, files))
    with pytest.raises(PrunebenchError) as info:
        Pipeline(cfg).run()
    message = str(info.value)
    assert "\n" not in message
    for word in _fill(words, files):
        assert word in message, (word, message)
    assert _written(tmp_path) == []


@pytest.mark.parametrize("overrides, words", HYDRA_CATALOGUE, ids=lambda v: " ".join(v)[:60])
def test_bad_choice_or_key_is_refused_by_hydra(tmp_path, overrides, words):
    with pytest.raises(HydraException) as info:
        make_cfg(tmp_path, *overrides)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_corrupt_compressed_checkpoint_names_the_file(files):
    import prunebench

    with pytest.raises(PrunebenchError, match=f"{files['garbage']} is not readable"):
        prunebench.load(files["garbage"])
    with pytest.raises(PrunebenchError, match="not a prunebench compressed checkpoint"):
        prunebench.load(files["wrong"])


CLI_CASES = [  # (overrides, words in the one error line, exit status)
    (["budget.finetune_epochs=-1"], ["budget.finetune_epochs=-1"], 2),
    (["paths.results_dir={readonly}"], ["paths.results_dir"], 2),
    (["bogus_key=1"], ["bogus_key"], 1),
]


def test_bad_input_through_the_cli(tmp_path, files):
    """Real ``python run.py`` processes (started together: their imports dominate)."""
    procs = []
    for k, (overrides, _, _) in enumerate(CLI_CASES):
        cmd = [
            sys.executable,
            "run.py",
            "budget=smoke",
            "logger=none",
            f"paths.results_dir={tmp_path / str(k) / 'results'}",
            f"paths.runs_dir={tmp_path / str(k) / 'runs'}",
            *_fill(overrides, files),
        ]
        procs.append(
            subprocess.Popen(
                cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    for k, ((overrides, words, status), proc) in enumerate(zip(CLI_CASES, procs, strict=True)):
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == status, (overrides, stderr[-2000:])
        errors = [ln for ln in stderr.splitlines() if ln.startswith(("error:", "Could not"))]
        assert len(errors) == 1, stderr[-2000:]
        for word in _fill(words, files):
            assert word in errors[0], (word, errors[0])
        assert not list((tmp_path / str(k)).rglob("*.json"))
        assert not list((tmp_path / str(k)).rglob("*.pt"))
