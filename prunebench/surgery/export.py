"""ONNX export of a slimmed model, onnxruntime parity, and onnxruntime as a latency engine.

The exporter is torch's maintained one (``torch.onnx.export(..., dynamo=True)``) at
``OPSET`` with a dynamic batch axis. Every structure the core builds exports: plain slimmed
convs (filter and channel removal, CaP's compensated weights), kernel masks (baked into a plain
conv's zeros), SPP's ``ColumnConv`` (a gather and a matmul) and TRP's low-rank pairs.

The model is traced on a batch of at least two: torch.export specialises a dynamic axis whose
example size is 1 wherever the model reshapes or permutes it (size-1 dimensions are special to
strides), and then refuses the dynamic batch — ConvNeXt and SPP-pruned models with a global pool
failed to export from a one-image example.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prunebench.errors import PrunebenchError

OPSET = 18
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch's exporter colours its messages
EMBED_LIMIT_BYTES = 1_500_000_000  # weights above this go to <file>.data (protobuf's 2 GB cap)


class ExportError(PrunebenchError):
    """A model that did not export or whose ONNX output disagrees with PyTorch's."""


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Export ``model`` (eval mode) to ``path`` with a dynamic batch axis; returns the path.
    The weights are embedded in the file unless they exceed ``EMBED_LIMIT_BYTES`` (then they
    are in ``<path>.data`` beside it)."""
    model = model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    stale = path.with_name(path.name + ".data")  # an earlier export's weights must not linger
    stale.unlink(missing_ok=True)
    if example.shape[0] < 2:  # see the module docstring
        example = example.expand(2, *example.shape[1:]).contiguous()
    try:
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes=({0: batch},),
            external_data=size > EMBED_LIMIT_BYTES,
            verbose=False,
        )
    except Exception as exc:  # noqa: BLE001 — name the structures the model holds
        kinds = sorted({type(m).__name__ for m in model.modules() if not list(m.children())})
        first = ANSI.sub("", str(exc)).strip().splitlines()
        raise ExportError(
            f"ONNX export failed for a model made of {kinds}: {type(exc).__name__}: "
            f"{first[0] if first else ''}"
        ) from None
    return path


class OrtModule(nn.Module):
    """An onnxruntime session behind an ``nn.Module`` face (CPU provider), so the latency code
    times it exactly as it times a PyTorch model."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(np.asarray(out))


@torch.no_grad()
def parity(
    model: nn.Module, ort_model: OrtModule, x: torch.Tensor, rtol: float = 1e-3, atol: float = 1e-4
) -> dict[str, float]:
    """Largest absolute and relative differences between PyTorch's and onnxruntime's outputs on
    ``x``; raises :class:`ExportError` beyond ``atol + rtol·|y|``."""
    ref = model.eval()(x)
    got = ort_model(x)
    diff = (ref - got).abs()
    result = {
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float((diff / ref.abs().clamp(min=1e-6)).max()),
        "rtol": rtol,
        "atol": atol,
    }
    if not bool((diff <= atol + rtol * ref.abs()).all()):
        raise ExportError(
            f"onnxruntime output differs from PyTorch's: max |Δ| {result['max_abs_diff']:.3g} "
            f"(allowed {atol} + {rtol}·|y|)"
        )
    return result
