"""The record of one point, assembled from its pipeline: the fields known before anything runs
(:func:`identity`), the record of a run that failed (:func:`failed`) and of one that finished
(:func:`completed`: the measurements, the deployable checkpoint, the DDP ranks' agreement). The
schema is ``prunebench.reporting.records``; the pipeline runs the stages and writes what this returns."""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from prunebench.errors import TrainingDiverged
from prunebench.method import Method
from prunebench.plan import Plan
from prunebench.reporting import report
from prunebench.reporting.records import SCHEMA_VERSION
from prunebench.running import distributed
from prunebench.running.baseline import baseline_key
from prunebench.running.provenance import git_commit
from prunebench.running.tracking import Tracker
from prunebench.running.usage import TrainUsage
from prunebench.running.validate import weights_sha256
from prunebench.surgery.checkpoint import save_compressed
from prunebench.surgery.masks import remove_masks
from prunebench.surgery.measure import count_macs, count_params, latency_entry
from prunebench.surgery.structure import MacModel
from prunebench.task import Task


class Pipeline(Protocol):
    """What a record is assembled from: the run's state (``prunebench.running.pipeline.Pipeline``)."""

    cfg: dict[str, Any]
    task: Task
    method: Method
    seed: int
    point_id: str
    stage: str
    stage_seconds: dict[str, float]
    rank_zero: bool
    tracker: Tracker
    usage: dict[str, TrainUsage]
    val_passes: int

    @property
    def finetune_epochs(self) -> int: ...


def identity(p: Pipeline) -> dict[str, Any]:
    """The record's fields that are known before anything runs."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": uuid.uuid4().hex[:12],
        "point_id": p.point_id,
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "task": p.task.name,
        "method": p.cfg["method"]["name"],
        "method_hparams": p.method.hparams(),
        "seed": p.seed,
        "budget": p.cfg["budget"]["name"],
        "data_source": p.cfg["data"]["source"],
        "target_macs_reduction": (
            float(p.cfg["target"]["macs_reduction"]) if p.method.uses_target else None
        ),
        "metric": f"test/{p.task.metric}",
        "higher_is_better": p.task.higher_is_better,
        "stage_seconds": p.stage_seconds,
        "finetune_epochs": p.finetune_epochs,
        "config": p.cfg,
    }


def failed(p: Pipeline, exc: BaseException) -> dict[str, Any]:
    """The ``failed`` record: the identity, the stage and the reason, no measurements."""
    failure = {"stage": p.stage, "reason": f"{type(exc).__name__}: {exc}"}
    if isinstance(exc, TrainingDiverged):
        failure.update(stage=exc.stage, epoch=exc.epoch, step=exc.step)
    where = f"{failure['stage']} stage" + (
        f", epoch {failure['epoch']}" if "epoch" in failure else ""
    )
    return {
        **identity(p),
        "status": "failed",
        "failure_reason": f"{where}: {failure['reason']}",
        "failure": failure,
        "achieved_macs_reduction": 0.0,
        "baseline": {
            "hash": baseline_key(p.cfg),
            "recipe_hash": baseline_key(p.cfg, with_seed=False),
            "source": "none",
            "test": {},
        },
        "test": {},
        "macs": {"dense": 0, "compressed": 0},
        "params": {"dense": 0, "compressed": 0},
        "latency": None,
        "plan_widths": {},
        "wandb": None,
    }


def ranks_agree(compressed: nn.Module, plan: Plan) -> list[str]:
    """Every rank's checksum of the compressed model (weights, buffers and plan); under DDP
    they must agree — the methods decide once, identically on every rank."""
    digest = weights_sha256(compressed, plan.to_dict())
    digests = distributed.gather(digest)
    if len(set(digests)) > 1:
        raise RuntimeError(f"DDP ranks disagree on the compressed model: sha256 {digests}")
    if len(digests) > 1:
        print(f"rank {distributed.rank()}: compressed model sha256 {digest} (ranks agree)")
    return digests


def completed(
    p: Pipeline,
    baseline: nn.Module,
    compressed: nn.Module,
    plan: Plan,
    mac_model: MacModel,
    info: dict[str, Any],
    test: dict[str, float],
) -> dict[str, Any]:
    """The ``ok`` record: measures the baseline and the compressed model (MACs analytic and
    realised, params, latency), saves the deployable checkpoint, checks that the DDP ranks agree;
    on a rank other than 0 only the check runs."""
    example = p.task.example_input()
    macs_dense, macs_comp = count_macs(baseline, example), count_macs(compressed, example)
    compressed = remove_masks(copy.deepcopy(compressed), bake=True)  # as deployed
    ranks = ranks_agree(compressed, plan)
    if not p.rank_zero:  # rank 0 alone measures and writes; this rank's part is done
        return {"status": "ok", "metric": f"test/{p.task.metric}", "test": test}
    checkpoint = save_compressed(
        Path(p.cfg["paths"]["runs_dir"]) / "checkpoints" / p.task.name / f"{p.point_id}.pt",
        p.cfg["task"],
        plan,
        compressed,
        {
            "method": p.cfg["method"]["name"],
            "hparams": p.method.hparams(),
            "seed": p.seed,
        },
    )
    lat = p.cfg["budget"]["latency"]
    latency = None
    if lat.get("batch"):
        batch = p.task.example_input(int(lat["batch"]))
        latency = latency_entry(baseline, compressed, batch, lat["repeats"], lat["warmup"])
    rows = report.layer_rows(baseline, compressed, macs_dense, macs_comp)
    p.tracker.log_layers(rows)
    # Analytic MACs count surviving kernels; realised MACs are what the slimmed model computes
    # (kernel-masked convs stay dense). They agree for filter plans.
    macs_analytic = mac_model.plan_macs(plan)
    achieved = 1 - macs_analytic / macs_dense.total
    summary = {**test, "macs_reduction": achieved, "macs": macs_analytic}
    return {
        **identity(p),
        "status": "ok",
        "failure_reason": None,
        "achieved_macs_reduction": achieved,
        "baseline": {
            "hash": info["hash"],
            "recipe_hash": baseline_key(p.cfg, with_seed=False),
            "source": info["source"],
            "pretrained": info.get("pretrained"),
            "val": {k: v for k, v in info["metrics"].items() if k.startswith("val/")},
            "test": {k: v for k, v in info["metrics"].items() if k.startswith("test/")},
        },
        "test": test,
        "macs": {
            "dense": macs_dense.total,
            "compressed": macs_analytic,
            "realised": macs_comp.total,
        },
        "params": {"dense": count_params(baseline), "compressed": count_params(compressed)},
        "latency": latency,
        "plan_widths": plan.widths(),
        "train_samples": {
            "split": p.usage["compress"].split,
            **{stage: u.to_dict() for stage, u in p.usage.items()},
            "compress_val_passes": p.val_passes,
        },
        "method_notes": p.method.notes(),
        "checkpoint": str(checkpoint),
        "weights_sha256": ranks[0],
        **(
            {"distributed": {"world_size": len(ranks), "weights_sha256": ranks}}
            if len(ranks) > 1
            else {}
        ),
        "wandb": p.tracker.finish(summary),
    }
