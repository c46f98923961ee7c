"""Compressed checkpoints: every structure saves, loads in a fresh process to identical outputs,
reproduces the run's test metric, exports to ONNX with onnxruntime parity; slim checkpoints are
smaller; foreign, cut or too-new files are refused clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from methods.magnitude import Magnitude
from prunebench.method import CompressContext
from prunebench.plan import Plan
from prunebench.reporting.records import checkpoint_file
from prunebench.running.checkpoint import CheckpointError, load, read_checkpoint, save_compressed
from prunebench.running.pipeline import Pipeline
from prunebench.surgery.columns import ColumnConv
from prunebench.surgery.export import OrtModule, export_onnx, parity
from prunebench.surgery.slim import slim
from tasks.classification.resnet_cifar import CifarResNet
from tests.conftest import ROOT, make_cfg

# One method per structure: filters, kernels, columns, low-rank factors, compensated weights.
STRUCTURES = {
    "magnitude": "filter",
    "kcp": "kernel",
    "spp": "column",
    "trp": "lowrank",
    "cap": "compensated",
}


def task_cfg(depth: int) -> dict:
    """A CIFAR ResNet task config, as a run would save it."""
    return {
        "_target_": "tasks.classification.CifarClassification",
        "name": f"cifar10_resnet{depth}",
        "depth": depth,
        "recipe": {"baseline": {"lr": 0.1}, "finetune": {"lr": 0.01}},
    }


LOAD_AND_RUN = """
import sys, torch
import prunebench
model = prunebench.load(sys.argv[1])
x = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(model(x), sys.argv[3])
"""


@pytest.mark.parametrize("method", sorted(STRUCTURES))
def test_save_load_in_a_fresh_process_and_onnx_parity(tmp_path, method):
    cfg = make_cfg(tmp_path, f"method={method}", "budget.latency.batch=0")
    rec = Pipeline(cfg).run()
    ckpt = checkpoint_file(rec)
    assert read_checkpoint(ckpt)["meta"]["method"] == method

    # The loaded model reproduces the run's test metric on the run's test split.
    model = load(ckpt)
    data = Pipeline(cfg).task.datamodule(cfg.data, cfg.budget.data, 0)
    xs, ys = map(
        torch.stack, zip(*[data.test_set[i] for i in range(len(data.test_set))], strict=True)
    )
    with torch.no_grad():
        logits = model(xs)
    top1 = float((logits.argmax(1) == ys).float().mean())
    assert top1 == pytest.approx(rec["test"]["test/top1"], abs=1e-6)

    # A fresh interpreter, with nothing but the file, computes the same outputs.
    torch.save(xs[:16], tmp_path / "x.pt")
    subprocess.run(
        [sys.executable, "-c", LOAD_AND_RUN, ckpt, str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        check=True,
        cwd=ROOT,
    )
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), logits[:16], rtol=0, atol=0)

    # ONNX: exports with a dynamic batch and onnxruntime agrees (tolerance in parity()).
    ort_model = OrtModule(export_onnx(model, xs[:2], tmp_path / "m.onnx"), threads=1)
    check = parity(model, ort_model, xs[:5])  # another batch size than the export's
    assert check["max_abs_diff"] < 1e-3


def test_slim_checkpoint_of_resnet56_is_smaller(tmp_path):
    torch.manual_seed(0)
    model = CifarResNet(56).eval()
    x = torch.zeros(1, 3, 32, 32)
    roots = [n for n, _ in model.named_modules() if n.startswith("layer") and n.endswith(".conv1")]
    ctx = CompressContext.build(model, x, roots, ["conv1", "fc"], 0.5, 0)
    plan = Magnitude("uniform").compress(ctx)
    dense = save_compressed(tmp_path / "dense.pt", task_cfg(56), Plan(), model)
    slimmed = save_compressed(
        tmp_path / "slim.pt", task_cfg(56), plan, slim(model, plan, x, ctx.structure)
    )
    ratio = slimmed.stat().st_size / dense.stat().st_size
    print(f"ResNet-56 at -50 % MACs: checkpoint {ratio:.3f} of the dense one")
    assert ratio < 0.6
    torch.testing.assert_close(load(slimmed)(x), slim(model, plan, x, ctx.structure).eval()(x))


def test_bad_checkpoints_are_refused_clearly(tmp_path):
    good = tmp_path / "ok.pt"
    save_compressed(good, task_cfg(20), Plan(), CifarResNet(20))
    blob = torch.load(good, weights_only=True)
    torch.save({**blob, "version": 2}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="version 2.*needs a newer prunebench"):
        load(tmp_path / "new.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a prunebench compressed checkpoint"):
        load(tmp_path / "foreign.pt")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not readable"):
        load(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "missing.pt")
    wrong = {**blob, "state_dict": CifarResNet(56).state_dict()}
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="do not fit the architecture"):
        load(tmp_path / "wrong.pt")


class _ChannelsLastBlock(nn.Module):
    """ConvNeXt's pattern: a linear layer over channels-last positions, permuted back."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("body", ["column_conv", "convnext_block"])
def test_a_one_image_example_exports_a_dynamic_batch(tmp_path, body):
    # Traced on one image, torch.export specialised the batch to 1 where a global pool and a
    # flatten read a permuted map (SPP's ColumnConv output, ConvNeXt's blocks) and refused the
    # dynamic axis: every SPP-pruned timm model and ConvNeXt under every method failed to export.
    torch.manual_seed(0)
    first = (
        ColumnConv(nn.Conv2d(8, 8, 3, 1, 1, bias=False), torch.rand(8, 3, 3) > 0.3)
        if body == "column_conv"
        else _ChannelsLastBlock()
    )
    model = nn.Sequential(first, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    x = torch.randn(5, 8, 6, 6)
    ort_model = OrtModule(export_onnx(model, x[:1], tmp_path / "m.onnx"), threads=1)
    for batch in (x, x[:1]):
        assert parity(model, ort_model, batch)["max_abs_diff"] < 1e-5
