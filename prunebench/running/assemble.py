"""The record of one point: the fields known before anything runs (:func:`identity`), the
record of a run that failed (:func:`failed`) and of one that finished (:func:`completed`), plus
the record stage's separate jobs — :func:`measure` (MACs, params, latency), :func:`deployable`
and :func:`save_checkpoint`, :func:`ranks_agree` (DDP). The schema is
``prunebench.reporting.records``; the pipeline calls these in turn and writes the record."""

from __future__ import annotations

import copy
import datetime as dt
import os
import uuid
from dataclasses import dataclass
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
from prunebench.running.bf16_check import bf16_refusal
from prunebench.running.checkpoint import save_compressed
from prunebench.running.config import Target
from prunebench.running.precision import FP32, cpu_has_bf16, is_bf16
from prunebench.running.provenance import environment, git_commit
from prunebench.running.training import trainer_device
from prunebench.running.usage import TrainUsage
from prunebench.running.validate import weights_sha256
from prunebench.surgery.masks import remove_masks
from prunebench.surgery.measure import count_macs, count_params, latency_entry
from prunebench.surgery.structure import MacModel
from prunebench.task import Task


class Pipeline(Protocol):
    """What a record is assembled from: the run's state (``prunebench.running.pipeline.Pipeline``)."""

    cfg: dict[str, Any]
    target: Target
    task: Task
    method: Method
    seed: int
    point_id: str
    stage: str
    stage_seconds: dict[str, float]
    resumed: dict[str, dict]
    usage: dict[str, TrainUsage]
    val_passes: int

    @property
    def finetune_epochs(self) -> int: ...

    @property
    def finetune_samples(self) -> int | None: ...


def identity(p: Pipeline) -> dict[str, Any]:
    """The record's fields that are known before anything runs."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": uuid.uuid4().hex[:12],
        "point_id": p.point_id,
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "environment": environment(trainer_device(p.cfg["trainer"])),
        "task": p.task.name,
        "method": p.cfg["method"]["name"],
        "method_hparams": p.method.hparams(),
        "method_start": p.method.start,
        "seed": p.seed,
        "budget": p.cfg["budget"]["name"],
        "data_source": p.cfg["data"]["source"],
        "target_macs_reduction": (p.target.macs_reduction if p.method.uses_target else None),
        "metric": f"test/{p.task.metric}",
        "higher_is_better": p.task.higher_is_better,
        "stage_seconds": p.stage_seconds,
        **({"resumed": p.resumed} if p.resumed else {}),
        "finetune_epochs": p.finetune_epochs,
        "precision": {
            "training": str(p.cfg["trainer"].get("precision")),
            "chosen_by": getattr(p, "precision_chosen", "config"),
            "evaluation": FP32,
            **_fallback(p),
        },
        "finetune_samples": p.finetune_samples,
        "config": p.cfg,
    }


def _fallback(p: Pipeline) -> dict[str, str]:
    """``{"fallback": why}`` when ``auto`` picked fp32 on a bf16 CPU because a layer of this
    model has a wrong bf16 kernel (``prunebench.running.bf16_check``); else empty."""
    if getattr(p, "precision_chosen", "config") != "auto" or is_bf16(p.cfg["trainer"]["precision"]):
        return {}
    if trainer_device(p.cfg["trainer"]) != "cpu" or not cpu_has_bf16():
        return {}
    why = bf16_refusal(p.cfg)
    return {"fallback": f"32-true: {why}"} if why else {}


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


@dataclass
class Measurements:
    """What the record says about the baseline and the compressed model's cost."""

    macs_dense: int
    macs_analytic: int  # counts surviving kernels (what the plan removes)
    macs_realised: int  # what the slimmed model computes (kernel-masked convs stay dense)
    params_dense: int
    params_compressed: int
    latency: dict[str, Any] | None
    layer_rows: list

    @property
    def achieved_macs_reduction(self) -> float:
        return 1 - self.macs_analytic / self.macs_dense


def measure(
    task: Task,
    baseline: nn.Module,
    masked: nn.Module,
    deployed: nn.Module,
    plan: Plan,
    mac_model: MacModel,
    latency: dict[str, Any],
) -> Measurements:
    """MACs (analytic and realised), params, latency (``budget.latency``) and per-layer rows of
    the baseline and the compressed model (``masked`` as trained, ``deployed`` with masks
    baked). Analytic and realised MACs agree for filter plans."""
    example = task.example_input()
    macs_dense, macs_comp = count_macs(baseline, example), count_macs(masked, example)
    lat = None
    if latency.get("batch"):
        batch = task.example_input(int(latency["batch"]))
        lat = latency_entry(baseline, deployed, batch, latency["repeats"], latency["warmup"])
    return Measurements(
        macs_dense=macs_dense.total,
        macs_analytic=mac_model.plan_macs(plan),
        macs_realised=macs_comp.total,
        params_dense=count_params(baseline),
        params_compressed=count_params(deployed),
        latency=lat,
        layer_rows=report.layer_rows(baseline, deployed, macs_dense, macs_comp),
    )


def deployable(compressed: nn.Module) -> nn.Module:
    """A copy of ``compressed`` as deployed: masks baked into plain weights."""
    return remove_masks(copy.deepcopy(compressed), bake=True)


def save_checkpoint(p: Pipeline, plan: Plan, deployed: nn.Module) -> Path:
    """The deployable checkpoint under ``runs/checkpoints/<task>/<point>.pt``."""
    return save_compressed(
        Path(p.cfg["paths"]["runs_dir"]) / "checkpoints" / p.task.name / f"{p.point_id}.pt",
        p.cfg["task"],
        plan,
        deployed,
        {
            "method": p.cfg["method"]["name"],
            "hparams": p.method.hparams(),
            "seed": p.seed,
        },
    )


def completed(
    p: Pipeline,
    m: Measurements,
    plan: Plan,
    info: dict[str, Any],
    test: dict[str, float],
    checkpoint: Path,
    ranks: list[str],
    wandb: dict[str, Any] | None,
) -> dict[str, Any]:
    """The ``ok`` record from what the stages produced and measured."""
    return {
        **identity(p),
        "status": "ok",
        "failure_reason": None,
        "achieved_macs_reduction": m.achieved_macs_reduction,
        "baseline": {
            "hash": info["hash"],
            "recipe_hash": baseline_key(p.cfg, with_seed=False),
            "source": info["source"],
            "pretrained": info.get("pretrained"),
            "trained_by": info.get("trained_by"),
            "val": {k: v for k, v in info["metrics"].items() if k.startswith("val/")},
            "test": {k: v for k, v in info["metrics"].items() if k.startswith("test/")},
        },
        "test": test,
        "macs": {
            "dense": m.macs_dense,
            "compressed": m.macs_analytic,
            "realised": m.macs_realised,
        },
        "params": {"dense": m.params_dense, "compressed": m.params_compressed},
        "latency": m.latency,
        "plan_widths": plan.widths(),
        "train_samples": {
            "split": p.usage["compress"].split,
            **{stage: u.to_dict() for stage, u in p.usage.items()},
            "compress_val_passes": p.val_passes,
        },
        "method_notes": p.method.notes(),
        "checkpoint": os.path.relpath(checkpoint, p.cfg["paths"]["runs_dir"]),  # machine-free
        "weights_sha256": ranks[0],
        **(
            {"distributed": {"world_size": len(ranks), "weights_sha256": ranks}}
            if len(ranks) > 1
            else {}
        ),
        "wandb": wandb,
    }
