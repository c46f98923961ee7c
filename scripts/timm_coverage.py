"""Which methods run on which timm families: real smoke runs, method × model, into a table.

Each pair is one pipeline run (``task=imagenet_timm task.model=<m> method=<k>``, budget smoke,
the embedded stand-in, a smaller data cap) at ``--target`` MACs reduction. A run that completes is
checked four ways: the MACs reduction it reached; masked ≡ slimmed (the compressed model's masked
form and its slimmed form give the same outputs on the stated input, before finetuning); the
analytic MACs against a direct count (``FlopCounterMode``) of the slimmed model; the checkpoint
reloads to the same outputs and MACs; the reloaded model exports to ONNX with onnxruntime parity.
A method that cannot apply refuses before training with one line, which the table quotes.

    python scripts/timm_coverage.py [--models …] [--methods …] [--out docs/timm_coverage.md]

Results accumulate in ``--cache`` (one JSON per pair), so a rerun skips the pairs already done
(``--redo`` reruns them); the table is written from every cached pair.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prunebench.errors import PrunebenchError  # noqa: E402
from prunebench.reporting.records import checkpoint_file  # noqa: E402
from prunebench.running.checkpoint import load  # noqa: E402
from prunebench.running.pipeline import Pipeline  # noqa: E402
from prunebench.surgery.export import OrtModule, export_onnx, parity  # noqa: E402
from prunebench.surgery.masks import apply_masks, remove_masks  # noqa: E402
from prunebench.surgery.measure import count_macs  # noqa: E402
from tasks.classification.timm_models import COVERED  # noqa: E402

METHODS = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))
# One batch per epoch: on two shared CPU cores the whole matrix must fit in an hour or so.
# One baseline epoch of one batch (the pre-flight refuses an untrained baseline) and no finetuning
# (the table says whether a method applies, not how accurate it is).
DATA = (
    "budget.data.train=16",
    "budget.data.val=8",
    "budget.data.test=8",
    "task.embedded.size=32",
    "budget.baseline_epochs=1",
    "budget.finetune_epochs=0",
)
# one method on every model before the next, so an interrupted run still has the breadth
ORDER = ("magnitude", "kcp", "trp", "spp", "lapp", "cap", "random", "dense")
# CaP's covariance search at the smoke tier: a tiny ridge (few calibration images leave the wide
# covariances singular) and a shorter search, as the ImageNet smoke test uses.
EXTRA = {"cap": ("method.ridge=1e-6", "method.search_steps=2", "method.target_iters=2")}


class Probe(Pipeline):
    """The pipeline, keeping the masked and the slimmed model of the compress stage and checking
    that they agree (before finetuning changes the slimmed one)."""

    def _compress(self, baseline):
        model, slimmed, plan, mac_model = super()._compress(baseline)
        # the plan's masks on a copy (a one-shot method returns the unmasked model)
        masked = apply_masks(copy.deepcopy(model), plan, mac_model.structure)
        x = self.task.example_input(2)
        with torch.no_grad():
            a = masked.eval()(x)
            b = slimmed.eval()(x)
        self.masked_vs_slimmed = float((a - b).abs().max())
        self.slimmed = slimmed
        return model, slimmed, plan, mac_model


def compose(model: str, method: str, target: float, workdir: Path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(
            "config",
            overrides=[
                "task=imagenet_timm",
                f"task.model={model}",
                f"method={method}",
                f"target.macs_reduction={target}",
                "budget=smoke",
                "budget.latency.batch=0",
                "logger=none",
                f"paths.results_dir={workdir / 'results'}",
                f"paths.runs_dir={workdir / 'runs'}",
                "force=true",
                *DATA,
                *EXTRA.get(method, ()),
            ],
        )


def run_pair(model: str, method: str, target: float, workdir: Path) -> dict:
    start = time.perf_counter()
    out: dict = {"model": model, "method": method, "target": target}
    try:
        p = Probe(compose(model, method, target, workdir))
        rec = p.run()
    except PrunebenchError as exc:
        return {**out, "outcome": "refused", "reason": str(exc), "seconds": _since(start)}
    except Exception as exc:  # noqa: BLE001 — the table records the failure
        traceback.print_exc()
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return {**out, "outcome": "failed", "reason": why, "seconds": _since(start)}
    x = p.task.example_input(2)
    loaded = load(checkpoint_file(rec))
    deployed = remove_masks(copy.deepcopy(p.slimmed), bake=True).eval()
    with torch.no_grad():
        reload_diff = float((loaded(x) - deployed(x)).abs().max())
    counted = count_macs(loaded, x[:1]).total
    out.update(
        outcome="runs",
        reduction=rec["achieved_macs_reduction"],
        macs_analytic=rec["macs"]["compressed"],
        macs_counted=counted,
        masked_vs_slimmed=p.masked_vs_slimmed,
        reload_max_diff=reload_diff,
        reload_macs_equal=counted == rec["macs"]["realised"],
        kernel_masked=any(e["kind"] == "kernel" for e in _entries(rec)),
    )
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = export_onnx(loaded, x[:1], Path(tmp) / "model.onnx")
            out["onnx"] = parity(loaded, OrtModule(path, threads=1), x)["max_abs_diff"]
        except Exception as exc:  # noqa: BLE001
            why = str(exc).splitlines()[0] if str(exc) else ""
            out["onnx"] = f"{type(exc).__name__}: {why.split(']: ', 1)[-1][:200]}"
    out["seconds"] = _since(start)
    return out


def _entries(rec: dict) -> list[dict]:
    from prunebench.running.checkpoint import read_checkpoint

    return list(read_checkpoint(checkpoint_file(rec))["plan"]["entries"].values())


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 1)


def _yes(ok: bool, detail: str = "") -> str:
    return ("yes" if ok else "**no**") + (f" ({detail})" if detail else "")


def cell(r: dict) -> list[str]:
    if r["outcome"] != "runs":
        reason = r["reason"].replace("|", "\\|")
        return [r["outcome"], reason, "", "", "", ""]
    exact = r["macs_analytic"] == r["macs_counted"]
    macs = (
        "kernel-masked: analytic < counted (masked kernels stay in a dense conv)"
        if r["kernel_masked"] and not exact
        else _yes(exact, f"{r['macs_counted']:,}")
    )
    onnx = r["onnx"]
    onnx = f"yes (max Δ {onnx:.1e})" if isinstance(onnx, float) else f"**no**: {onnx}"
    ms = r["masked_vs_slimmed"]
    return [
        "runs",
        f"{r['reduction']:.3f}",
        "not checked (run before the probe masked a copy)"
        if ms is None
        else _yes(ms < 1e-3, f"max Δ {ms:.1e}"),
        macs,
        _yes(r["reload_max_diff"] < 1e-4 and r["reload_macs_equal"]),
        onnx,
    ]


def table(results: list[dict], target: float) -> str:
    head = (
        "# timm coverage: every method × family, from real smoke runs\n\n"
        "Generated by `python scripts/timm_coverage.py` (do not edit by hand): each row is one "
        "pipeline run, `task=imagenet_timm task.model=<model> method=<method> "
        f"target.macs_reduction={target} budget=smoke` on the embedded stand-in (16 train "
        "images per epoch at 32 px, the smoke tier's 64-px stated input for MACs and tracing; one "
        "baseline epoch, no finetuning — besides a method's own training, one compress epoch: this table says whether a method applies, not how accurate it is). *MACs reduction*: the run's achieved "
        "reduction. *masked ≡ slimmed*: largest output difference of the masked and the "
        "slimmed compressed model before finetuning. *analytic = counted*: the record's analytic "
        "MACs against a direct `FlopCounterMode` count of the reloaded slimmed model. *reloads*: "
        "the checkpoint rebuilds the slimmed model with the same outputs and MACs. *ONNX*: "
        "exported (dynamo) and run by onnxruntime at parity. A refusal is the run's one line, "
        "given before any training. timm initialises each residual block's last BN scale to 0 "
        "(`zero_init_last`), so in these untrained ResNet/ResNeXt/RegNet runs a block's branch "
        "outputs zero and their masked ≡ slimmed figure is 0 by construction; the depth-wise "
        "families' figures, and tests/test_timm.py (randomised BN statistics), are the real "
        "check. See docs/timm.md.\n\n"
    )
    order = {m: i for i, m in enumerate(COVERED)}
    models = sorted({r["model"] for r in results}, key=lambda m: (order.get(m, 99), m))
    methods = sorted({r["method"] for r in results})
    by = {(r["model"], r["method"]): r for r in results}
    short = {"refused": "refused", "failed": "**failed**", "not run": "not run"}
    matrix = ["| model | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for m in models:
        row = []
        for k in methods:
            r = by.get((m, k), {"outcome": "not run"})
            ok = r["outcome"] == "runs"
            row.append(f"runs, −{100 * r['reduction']:.1f} %" if ok else short[r["outcome"]])
        matrix.append(f"| {m} | " + " | ".join(row) + " |")
    head += "\n".join(matrix) + "\n\nEvery pair, with the checks or the refusal's line:\n\n"
    cols = [
        "model",
        "method",
        "outcome",
        "MACs reduction / reason",
        "masked ≡ slimmed",
        "analytic = counted MACs",
        "reloads",
        "ONNX",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(results, key=lambda r: (order.get(r["model"], 99), r["model"], r["method"])):
        lines.append("| " + " | ".join([r["model"], r["method"], *cell(r)]) + " |")
    runs = sum(r["outcome"] == "runs" for r in results)
    refused = sum(r["outcome"] == "refused" for r in results)
    missing = sum(r["outcome"] == "not run" for r in results)
    failed = len(results) - runs - refused - missing
    foot = (
        f"\n\n{runs} runs, {refused} refusals, {failed} failures, {missing} not run, of "
        f"{len(results)} pairs.\n"
    )
    return head + "\n".join(lines) + foot


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(COVERED))
    p.add_argument("--methods", nargs="*", default=METHODS)
    p.add_argument("--target", type=float, default=0.3)
    p.add_argument("--cache", default="runs/timm_coverage")
    p.add_argument("--out", default=str(ROOT / "docs" / "timm_coverage.md"))
    p.add_argument("--redo", action="store_true", help="run the cached pairs again")
    p.add_argument(
        "--table-only", action="store_true", help="write the table from the cache, run nothing"
    )
    args = p.parse_args(argv)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    methods = sorted(args.methods, key=lambda m: (ORDER.index(m) if m in ORDER else 99, m))
    for method in methods:
        for model in args.models:
            path = cache / f"{model}--{method}.json"
            if args.table_only or (path.exists() and not args.redo):
                continue
            r = run_pair(model, method, args.target, cache / "work")
            path.write_text(json.dumps(r, indent=1))
            print(f"{model:24} {method:10} {r['outcome']:8} {r.get('seconds')} s", flush=True)
    results = [json.loads(f.read_text()) for f in sorted(cache.glob("*--*.json"))]
    done = {(r["model"], r["method"]) for r in results}
    results += [
        {"model": mo, "method": me, "outcome": "not run", "reason": "not run yet"}
        for mo in args.models
        for me in methods
        if (mo, me) not in done
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table(results, args.target))
    print(f"wrote {args.out} ({len(results)} pairs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
