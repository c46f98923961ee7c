"""Export a compressed run to ONNX, check onnxruntime against PyTorch, and time both on CPU.

    python scripts/export.py runs/checkpoints/<task>/<point>.pt --onnx out.onnx
    python scripts/export.py runs/results/records/<task>/<point>.json --onnx out.onnx   # the record's checkpoint

Prints the opset, the parity on the task's example input (batch 2), and the median latency of
PyTorch and onnxruntime at each ``--batch`` (interleaved, after warm-up); ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from prunebench.errors import PrunebenchError
from prunebench.running.checkpoint import load_with_task
from prunebench.surgery.export import OPSET, OrtModule, export_onnx, parity
from prunebench.surgery.measure import measure_latency_paired


def checkpoint_path(arg: str) -> Path:
    """A checkpoint file, or a run record naming one."""
    path = Path(arg)
    if path.suffix == ".json":
        record = json.loads(path.read_text())
        if not record.get("checkpoint"):
            raise PrunebenchError(f"record {path} names no checkpoint (made before checkpoints)")
        return Path(record["checkpoint"])
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source", help="a compressed checkpoint (.pt) or a run record (.json)")
    p.add_argument("--onnx", required=True, help="where to write the .onnx file")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64], help="latency batch sizes")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    try:
        path = checkpoint_path(args.source)
        model, task = load_with_task(path)
        onnx_path = export_onnx(model, task.example_input(2), args.onnx)
        ort_model = OrtModule(onnx_path)
        check = parity(model, ort_model, task.example_input(2))
    except PrunebenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {onnx_path} (opset {OPSET}, dynamic batch axis)")
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
