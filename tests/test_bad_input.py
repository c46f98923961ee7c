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
from prunebench.running.pipeline import Pipeline
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
    (["target.round_to=0"], ["target.round_to=0", "integer ≥ 1"]),
    (["method=kcp", "target.round_to=8"], ["target.round_to=8", "'kcp'", "magnitude, random"]),
    (["seed=-1"], ["seed=-1", "integer ≥ 0"]),
    (["budget.finetune_epochs=-1"], ["budget.finetune_epochs=-1", "≥ 0"]),
    (["budget.baseline_epochs=-2"], ["budget.baseline_epochs=-2", "≥ 0"]),
    (["budget.finetune_samples=-5"], ["budget.finetune_samples=-5", "≥ 0 or null"]),
    (["budget.finetune_samples=1.5"], ["budget.finetune_samples=1.5", "integer"]),
    (["method=scratch", "method.widths={{layer1.0.conv1:0}}"], ["method.widths.layer1.0.conv1=0"]),
    (["method=scratch", "method.bypass=wide"], ["method.bypass='wide'", "conv1x1"]),
    (["budget.compress_epochs=many"], ["budget.compress_epochs='many'"]),
    (["budget.data.train=0"], ["budget.data.train=0", "≥ 1"]),
    (["budget.latency.repeats=0"], ["budget.latency.repeats=0", "≥ 1"]),
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
    (["task=imagenet_alexnet", "task.embedded.size=32"], ["task.embedded.size=32", "63 px"]),
    (["paths.results_dir={readonly}"], ["paths.results_dir", "{readonly}"]),
    # built up front (prunebench.running.preflight): the model, the data settings, the Trainer, the budget
    (["trainer.devices=0"], ["trainer.devices=0", "-1", "auto"]),
    (["+trainer.strategy=bogus"], ["trainer", "strategy='bogus'"]),
    (["data.num_workers=-1"], ["data.num_workers=-1", "≥ 0"]),
    (["data=disk", "data.val_fraction=1.5"], ["data.val_fraction=1.5", "(0, 1)"]),
    (["task.depth=21"], ["task.depth=21", "6n+2", "20, 32"]),
    (["task.shortcut=C"], ["task.shortcut='C'", "A, B"]),
    (["task.num_classes=0"], ["task.num_classes=0", "≥ 2"]),
    (["budget.baseline_epochs=0"], ["budget.baseline_epochs=0", "≥ 1", "task.pretrained"]),
    # method hyper-parameters: one mechanism (prunebench.options), the key and the value named
    (
        ["method=kcp", "method.group=layer_kmeans", "method.n_clusters=0"],
        ["method.n_clusters=0", "[1, inf)"],
    ),
    (["method=kcp", "method.finetune_epochs_per_step=-1"], ["method.finetune_epochs_per_step=-1"]),
    (["method=kcp", "method.step_reduction=abc"], ["method.step_reduction='abc'", "(0, 1]"]),
    (["method=spp", "method.A=abc"], ["method.A='abc'", "a number", "(0, 1]"]),
    (["method=spp", "method.A=-1"], ["method.A=-1", "(0, 1]"]),
    (["method=spp", "method.score_decay=2"], ["method.score_decay=2", "[0, 1]"]),
    (["method=lapp", "method.tau=0"], ["method.tau=0", "(0, inf)"]),
    (["method=lapp", "method.prune_epochs=-1"], ["method.prune_epochs=-1", "null or"]),
    (["method=cap", "method.calib_fraction=0"], ["method.calib_fraction=0", "(0, 1]"]),
    (["method=cap", "method.calib_fraction=1.5"], ["method.calib_fraction=1.5", "(0, 1]"]),
    (["method=trp", "method.period=0"], ["method.period=0", "[1, inf)"]),
    (["method=random", "method.allocation=paper"], ["method.allocation='paper'", "'uniform'"]),
]
if not torch.cuda.is_available():  # refused only where there is no GPU
    CATALOGUE += [
        (["trainer=gpu"], ["trainer.accelerator='gpu'", "no CUDA GPU", "trainer=cpu"]),
        (["trainer=ddp"], ["trainer.accelerator='gpu'", "no CUDA GPU", "trainer=cpu"]),
    ]
HYDRA_CATALOGUE = [  # refused by Hydra while composing, naming the key or listing the choices
    (["bogus_key=1"], ["bogus_key"]),
    (["targt.macs_reduction=0.5"], ["targt", "RunConfig"]),  # the schema: a misspelt core key
    (["target.macs_reduction=abc"], ["target.macs_reduction=abc", "Float"]),  # …and its types
    (["target.round_to=8.5"], ["target.round_to=8.5", "Integer"]),
    (["seed=abc"], ["seed=abc", "Integer"]),
    (["seed=1.5"], ["seed=1.5", "Integer"]),
    (["force=maybe"], ["force=maybe", "bool"]),
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
    message = f"{info.value} {info.value.__cause__ or ''}"  # Hydra's line and the type error
    for word in words:
        assert word in message, (word, message)


def test_corrupt_compressed_checkpoint_names_the_file(files):
    import prunebench

    with pytest.raises(PrunebenchError, match=f"{files['garbage']} is not readable"):
        prunebench.load(files["garbage"])
    with pytest.raises(PrunebenchError, match="not a prunebench compressed checkpoint"):
        prunebench.load(files["wrong"])


def test_target_below_one_unit_is_refused():
    """A target within rounding of 0 would prune nothing and finetune anyway: the solver says
    how much its smallest step removes."""
    from prunebench.errors import ConfigError
    from prunebench.method import CompressContext
    from tasks.classification.resnet_cifar import CifarResNet

    torch.manual_seed(1)  # the weights and scores (at some draws 0.02 is out of the solver's reach)
    model = CifarResNet(8)
    prunable = [n for n, _ in model.named_modules() if n.endswith(".conv1") and "layer" in n]
    ctx = CompressContext.build(model, torch.randn(1, 3, 32, 32), prunable, ["conv1", "fc"], 1e-9)
    scores = {r: torch.rand(g.size) for r, g in ctx.structure.groups.items()}
    with pytest.raises(ConfigError, match=r"target.macs_reduction=1e-09 is below one prunable"):
        ctx.solve(scores)
    ctx.macs_reduction = 0.02  # one filter of ResNet-8 removes 2.4 %: one filter goes
    assert 0 < ctx.mac_model.plan_reduction(ctx.solve(scores)) < 0.05


def test_home_folder_is_expanded_in_overrides():
    import run

    home = os.path.expanduser("~")
    assert run.expand_home("task.pretrained=~/r18.pth") == f"task.pretrained={home}/r18.pth"
    assert run.expand_home("data.root=~") == f"data.root={home}"
    assert run.expand_home("~task.pretrained") == "~task.pretrained"  # Hydra's delete: untouched
    assert run.expand_home("seed=1") == "seed=1"


# Through the real CLI (``run.py``'s Hydra entry point, argument parsing and exit status), all
# in one Python process so that the imports are paid once: (overrides, words in the one error
# line). Every case is refused before anything trains, with status 2.
CLI_CASES = [
    (["bogus_key=1"], ["bogus_key", "+bogus_key=1"]),
    (["method=nosuch"], ["method/nosuch", "magnitude", "kcp"]),
    (["task=nosuch"], ["task/nosuch", "cifar10_resnet20"]),
    (["budget=nosuch"], ["budget/nosuch", "smoke"]),
    (["method.bogus=1"], ["method.bogus"]),
    (["seed=${{foo}}"], ["seed", "foo"]),
    (["budget.finetune_epochs=-1"], ["budget.finetune_epochs=-1"]),
    (["paths.results_dir={readonly}"], ["paths.results_dir"]),
    (["trainer.devices=0"], ["trainer.devices=0"]),
    (["data.num_workers=-1"], ["data.num_workers=-1"]),
    (["task.depth=21"], ["task.depth=21"]),
    (["task.shortcut=C"], ["task.shortcut='C'"]),
    (["task.num_classes=0"], ["task.num_classes=0"]),
    (["budget.baseline_epochs=0"], ["budget.baseline_epochs=0"]),
    (["method=kcp", "method.step_reduction=abc"], ["method.step_reduction='abc'"]),
    (["method=spp", "method.A=-1"], ["method.A=-1"]),
    (
        ["task=imagenet_resnet18", "task.pretrained=~/no_such_r18.pth"],
        ["{home}/no_such_r18.pth", "is not a file"],
    ),
]
if not torch.cuda.is_available():
    CLI_CASES += [(["trainer=gpu"], ["trainer.accelerator='gpu'"])]

DRIVER = """
import contextlib, io, json, runpy, sys
out = []
for argv in json.load(sys.stdin):
    err, code = io.StringIO(), 0
    sys.argv = ["run.py", *argv]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            runpy.run_path("run.py", run_name="__main__")
        except SystemExit as exc:
            code = exc.code
    out.append({"code": code, "stderr": err.getvalue()})
print(json.dumps(out))
"""


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_bad_input_through_the_cli(tmp_path, files):
    """``python run.py …`` as a user types it: one ``error:`` line naming the key and value,
    exit status 2, no record or cache written, the published ``results/`` untouched."""
    import json

    published = _snapshot(ROOT / "results")
    fill = {**{k: str(v) for k, v in files.items()}, "home": os.path.expanduser("~")}
    argvs = []
    for k, (overrides, _) in enumerate(CLI_CASES):
        out = tmp_path / str(k)
        argvs.append(
            [
                "budget=smoke",
                "logger=none",
                f"paths.results_dir={out / 'results'}",
                f"paths.runs_dir={out / 'runs'}",
                *(o.format(**fill) for o in overrides),
            ]
        )
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER],
        input=json.dumps(argvs),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    for k, ((overrides, words), result) in enumerate(zip(CLI_CASES, results, strict=True)):
        lines = result["stderr"].strip().splitlines()
        assert result["code"] == 2, (overrides, result)
        assert len(lines) == 1 and lines[0].startswith("error: "), (overrides, lines)
        for word in words:
            assert word.format(**fill) in lines[0], (word, lines[0])
        written = [p for p in (tmp_path / str(k)).rglob("*") if p.suffix in (".json", ".pt")]
        assert written == [], (overrides, written)
    assert _snapshot(ROOT / "results") == published


def test_export_refuses_bad_arguments_and_names_a_missing_checkpoint(tmp_path, capsys):
    """``scripts/export.py``: a batch of 0 is refused before anything loads; a published record
    whose checkpoint is not on this machine says so and gives the command that recreates it."""
    from scripts.export import main as export

    record = next((ROOT / "results" / "records").rglob("*.json"))
    with pytest.raises(SystemExit) as info:
        export([str(record), "--onnx", str(tmp_path / "x.onnx"), "--batch", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --batch 0: must be an integer ≥ 1"

    from prunebench.reporting.records import read_record

    with_ckpt = next(
        p
        for p in (ROOT / "results" / "records").rglob("*.json")
        if read_record(p).get("checkpoint")
    )
    code = export([str(with_ckpt), "--onnx", str(tmp_path / "x.onnx"), "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    cfg = read_record(with_ckpt)["config"]
    assert "is not on this machine" in err[0]
    assert f"python run.py task={cfg['task']['name']} method={cfg['method']['name']}" in err[0]
    assert not list(tmp_path.iterdir())


def test_atomic_writes_honour_the_umask(tmp_path):
    from prunebench.reporting.records import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.json", "{}")
        os.umask(0o077)
        write_atomic(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600


def test_relative_checkpoint_is_found_under_runs_dir(tmp_path):
    from prunebench.reporting.records import checkpoint_file

    ckpt = tmp_path / "elsewhere" / "checkpoints" / "t" / "p.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    record = {"checkpoint": "checkpoints/t/p.pt", "config": {"paths": {"runs_dir": "/nowhere"}}}
    assert checkpoint_file(record, tmp_path / "elsewhere") == ckpt
    # an older record's absolute path from another machine: its checkpoints/… tail
    record["checkpoint"] = "/other/machine/runs/checkpoints/t/p.pt"
    assert checkpoint_file(record, tmp_path / "elsewhere") == ckpt
