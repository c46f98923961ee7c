"""Export a compressed run to ONNX, check onnxruntime against PyTorch, and time both on CPU.

    python scripts/export.py runs/checkpoints/<task>/<point>.pt --onnx out.onnx
    python scripts/export.py runs/results/records/<task>/<point>.json --onnx out.onnx   # the record's checkpoint

Prints the opset, the parity on the task's example input (batch 2), and the median latency of
PyTorch and onnxruntime at each ``--batch`` (interleaved, after warm-up); ``--json`` writes them.
A record's checkpoint is looked for under ``--runs-dir`` (default: the record's
``paths.runs_dir``); a published record's checkpoint is not in git, and the error gives the
``run.py`` command that recreates it. The weights are embedded in the ``.onnx`` file up to 1.5 GB;
above that they go to ``<out>.onnx.data`` beside it (ONNX's 2 GB protobuf limit), and the output
says so. Bad arguments: one ``error:`` line, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from prunebench.errors import PrunebenchError, RecordError
from prunebench.reporting.records import checkpoint_file, read_record
from prunebench.running.checkpoint import load_with_task
from prunebench.surgery.export import OPSET, OrtModule, export_onnx, parity
from prunebench.surgery.measure import measure_latency_paired


def checkpoint_path(arg: str, runs_dir: str | None = None) -> Path:
    """A checkpoint file, or a run record naming one (see ``records.checkpoint_file``)."""
    path = Path(arg)
    if path.suffix == ".json":
        try:
            return checkpoint_file(read_record(path), runs_dir)
        except RecordError as exc:
            raise PrunebenchError(f"record {path}: {exc}") from None
    return path


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for key, values, low in (
        ("--batch", args.batch, 1),
        ("--repeats", [args.repeats], 1),
        ("--warmup", [args.warmup], 0),
    ):
        bad = [v for v in values if v < low]
        if bad:
            p.exit(2, f"error: {key} {bad[0]}: must be an integer ≥ {low}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source", help="a compressed checkpoint (.pt) or a run record (.json)")
    p.add_argument("--onnx", required=True, help="where to write the .onnx file")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64], help="latency batch sizes")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--runs-dir", help="where a record's checkpoint lives (default: its own)")
    args = p.parse_args(argv)
    _check_args(p, args)
    try:
        path = checkpoint_path(args.source, args.runs_dir)
        model, task = load_with_task(path)
        onnx_path = export_onnx(model, task.example_input(2), args.onnx)
        ort_model = OrtModule(onnx_path)
        check = parity(model, ort_model, task.example_input(2))
    except PrunebenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = onnx_path.with_name(onnx_path.name + ".data")
    weights = f"weights in {data}" if data.exists() else "weights embedded"
    print(f"exported {onnx_path} (opset {OPSET}, dynamic batch axis, {weights})")
    print(
        f"parity on the example input: max |Δ| {check['max_abs_diff']:.2e}, "
        f"max rel {check['max_rel_diff']:.2e} (tolerance {check['atol']} + {check['rtol']}·|y|)"
    )
    latency = {}
    for b in args.batch:
        ms = measure_latency_paired(
            {"pytorch": model, "onnxruntime": ort_model},
            task.example_input(b),
            args.repeats,
            args.warmup,
        )
        latency[b] = {k: v["median_ms"] for k, v in ms.items()}
        print(
            f"batch {b:>3}: PyTorch {latency[b]['pytorch']:.2f} ms, onnxruntime "
            f"{latency[b]['onnxruntime']:.2f} ms (median of {args.repeats}, "
            f"{torch.get_num_threads()} threads)"
        )
    if args.json:
        out = {"checkpoint": str(path), "opset": OPSET, "parity": check, "latency_ms": latency}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
