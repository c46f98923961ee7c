"""The four stages — baseline, compress, finetune, evaluate — and the record, for any
task × method.

The pipeline never asks which method or task it runs: a method's shape (one-shot, iterative,
during-training) lives entirely inside ``Method.compress`` (see ``prunebench.method``). Training
is ``prunebench.running.training``, the point's lock/skip/failed-record life is
``prunebench.running.lifecycle``, and the record's fields are ``prunebench.running.assemble``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from prunebench.data import DataModule
from prunebench.errors import ConfigError, PrunebenchError
from prunebench.method import CompressContext, Method
from prunebench.running import assemble, distributed
from prunebench.running.baseline import baseline_key, load_or_train
from prunebench.running.bf16_check import bf16_refusal
from prunebench.running.config import Target
from prunebench.running.lifecycle import run_point
from prunebench.running.precision import AUTO, resolve_precision
from prunebench.running.preflight import preflight
from prunebench.running.tier import apply_tier_recipe
from prunebench.running.tracking import Tracker
from prunebench.running.training import Training
from prunebench.running.usage import TrainUsage
from prunebench.running.validate import validate_config
from prunebench.surgery.slim import slim
from prunebench.surgery.structure import MacModel, Structure
from prunebench.task import Task

# do not change a run's numbers (``matched_to``: a note scripts/controls.py leaves in the record;
# ``experiment``: which claim an experiment config reproduces)
VOLATILE_KEYS = ("paths", "logger", "overwrite", "force", "matched_to", "experiment")
# Keys added after records were made: left out of the point id at the value every earlier record
# ran with, so those records keep their ids — (section, key, that value).
ID_OMITTED_AT = (
    ("target", "round_to", 1),  # filter plans rounded to a multiple
    ("budget", "finetune_samples", None),  # a budget-matched control's finetune length
    ("data", "device_resident", False),  # the split held on the device
    ("method", "svd", "direct"),  # TRP's projection solver
)


def _quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    # DDP: torchmetrics already reduce across ranks; the evaluation splits divide evenly
    warnings.filterwarnings("ignore", ".*sync_dist=True.*")
    warnings.filterwarnings("ignore", ".*Using `DistributedSampler` with the dataloaders.*")


def _instantiate(group: str, cfg: dict[str, Any]) -> Any:
    """Build a task or method from its config; a bad value is one ConfigError naming it."""
    try:
        return instantiate(cfg, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, PrunebenchError):
            raise cause from None
        target = cfg.get("_target_")
        fields = ", ".join(k for k in cfg if k != "_target_")
        raise ConfigError(
            f"{group}: {target} refused its config ({cause or exc}); its keys: {fields}"
        ) from None


def point_id(cfg: dict[str, Any]) -> str:
    """A run point's identity: readable fields plus a hash of everything that changes numbers
    (the keys of ``ID_OMITTED_AT`` only away from their old value, e.g. ``target.round_to`` only
    when it rounds, so records made before each option keep their id)."""
    target = Target.from_config(cfg["target"])
    ident = {k: v for k, v in cfg.items() if k not in VOLATILE_KEYS}
    for section, key, old in ID_OMITTED_AT:
        part = ident.get(section)
        if isinstance(part, dict) and part.get(key, old) == old:
            ident[section] = {k: v for k, v in part.items() if k != key}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[
        :10
    ]
    return (
        f"{cfg['task']['name']}-{cfg['method']['name']}-r{target.macs_reduction}"
        f"-s{cfg['seed']}-{cfg['budget']['name']}-{cfg['data']['source']}-{digest}"
    )


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The composed config as a run sees it: resolved, the tier's recipe merged in (e.g. the cpu
    tier's warm-up, ``task.cpu.recipe``), core values checked, and ``trainer.precision: auto``
    resolved for this machine (bf16-mixed or 32-true) — before the point id and the baseline key
    are taken, so the record and the cache say which precision ran."""
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    out = apply_tier_recipe(resolved)
    validate_config(out)
    out["trainer"]["precision"] = resolve_precision(out["trainer"], lambda: bf16_refusal(out))
    return out


def record_path(cfg: dict[str, Any], pid: str) -> Path:
    """Where the point ``pid`` of the run config ``cfg`` keeps its record."""
    return Path(cfg["paths"]["results_dir"]) / "records" / cfg["task"]["name"] / f"{pid}.json"


class Pipeline:
    """One run point: ``Pipeline(cfg).run()`` returns the record it wrote."""

    def __init__(self, cfg: DictConfig) -> None:
        chosen = OmegaConf.select(cfg, "trainer.precision") == AUTO
        self.precision_chosen = "auto" if chosen else "config"
        self.cfg = run_config(cfg)
        self.target = Target.from_config(self.cfg["target"])
        self.seed = int(self.cfg["seed"])
        self.task: Task = _instantiate("task", self.cfg["task"])
        method_cfg = {k: v for k, v in self.cfg["method"].items() if k != "name"}
        self.method: Method = _instantiate("method", method_cfg)
        if self.method.start not in ("baseline", "scratch"):
            raise ConfigError(f"method start={self.method.start!r}; choices: baseline, scratch")
        self.target.check_method(self.method, self.cfg["method"]["name"])
        preflight(self.cfg, self.task)  # model, data settings, Trainer: bad values fail now
        self.point_id = point_id(self.cfg)
        self.record_path = record_path(self.cfg, self.point_id)
        self.stage_seconds: dict[str, float] = {}  # whole stages, resumed ones included
        self.usage: dict[str, TrainUsage] = {}
        self.stage = "setup"  # the stage running now (a failed record names it)
        self.rank_zero = distributed.is_rank_zero()  # the one process that writes (DDP)

    def run(self) -> dict[str, Any]:
        """Run the stages and write the record (``prunebench.running.lifecycle``): a point whose
        valid record is ``ok`` is not run again unless ``force=true`` (or its old name
        ``overwrite=true``); a failed run leaves a ``failed`` record and re-raises."""
        _quiet_lightning()
        self.tracker = Tracker({"enabled": False}, self.point_id, self.cfg)
        self.outcome = "failed"
        record, self.outcome = run_point(
            self.record_path,
            Path(self.cfg["paths"]["runs_dir"]),
            bool(self.cfg.get("force", False) or self.cfg.get("overwrite", False)),
            self.rank_zero,
            self._stages,
            lambda exc: assemble.failed(self, exc),
            lambda: self.tracker.finish({"status": "failed"}),
        )
        return record

    @property
    def finetune_samples(self) -> int | None:
        """``budget.finetune_samples`` (the finetune length in training samples, which replaces
        ``budget.finetune_epochs`` when set), or None; None too for a method that does not
        finetune."""
        value = self.cfg["budget"].get("finetune_samples")
        return None if value is None or not self.method.finetune else int(value)

    @property
    def finetune_epochs(self) -> int:
        """The budget's finetune epochs, or 0 for a method that does not finetune. Controls run
        without finetuning with ``budget.finetune_epochs=0`` (the record says 0 and the
        leaderboard pools them apart). With ``budget.finetune_samples`` set: the epochs that
        many samples start (ceil(samples / split))."""
        if not self.method.finetune:
            return 0
        if self.finetune_samples is not None:
            usage = self.usage.get("finetune")  # absent before the data (a setup failure)
            split = usage.split if usage else int(self.cfg["budget"]["data"]["train"] or 1)
            return budget_epochs(self.finetune_samples, split)[0]
        return int(self.cfg["budget"]["finetune_epochs"])

    @property
    def finetune_batches(self) -> int | None:
        """Batches per finetune epoch under ``budget.finetune_samples`` (None: whole epochs)."""
        if self.finetune_samples is None:
            return None
        split = self.usage["finetune"].split
        return budget_epochs(self.finetune_samples, split, self.training.batch_size)[1]

    @property
    def resumed(self) -> dict[str, dict]:
        """Stage → {from_epoch, seconds_before} for the stages resumed after a kill."""
        training = getattr(self, "training", None)
        return training.resumed if training else {}

    @property
    def val_passes(self) -> int:
        """Validation-split passes the compress stage made (model selection)."""
        training = getattr(self, "training", None)
        return training.val_passes if training else 0

    def _timed(self, stage: str, fn, *args):
        self.stage = stage
        start = time.perf_counter()
        out = fn(*args)
        before = self.resumed.get(stage, {}).get("seconds_before", 0.0)  # killed runs' part
        self.stage_seconds[stage] = round(time.perf_counter() - start + before, 3)
        return out

    # -- the stages -------------------------------------------------------------------------
    def check_method(self) -> tuple[Structure, MacModel]:
        """Trace a freshly built, prepared model and ask the method whether it applies
        (:meth:`Method.refusal`); a refusal is one :class:`ConfigError` line naming the method, the
        model and the reason, before any data is read or anything trains. Returns the trace, which
        the compress stage reuses (the same architecture; the trace is by layer name)."""
        model = self.task.build_model()
        label = getattr(self.task, "model_name", None) or self.task.name
        refuse = f"method {self.cfg['method']['name']!r} cannot prune {label}"
        try:
            prunable = self.method.prepare(model, self.task.prunable_layers(model))
            example = self.task.example_input()
            structure = Structure(model, example, prunable, self.task.protected_layers(model))
        except (ValueError, ConfigError) as exc:  # a layer the method's replacement cannot take
            raise ConfigError(f"{refuse}: {exc}") from None
        mac_model = MacModel(model, example, structure)
        ctx = CompressContext.build(
            model,
            example,
            prunable,
            [],
            macs_reduction=self.target.macs_reduction,
            traced=(structure, mac_model),
        )
        reason = self.method.refusal(ctx)
        if reason:
            raise ConfigError(f"{refuse}: {reason}")
        return structure, mac_model

    def _stages(self) -> dict[str, Any]:
        self.traced = self.check_method()
        self.dm: DataModule = self.task.datamodule(
            self.cfg["data"], self.cfg["budget"]["data"], self.seed
        )
        logger = self.cfg["logger"] if self.rank_zero else {"enabled": False}
        self.tracker = Tracker(logger, self.point_id, self.cfg)
        loader = self.dm.train_dataloader()
        split, batch_size = len(loader.dataset), int(loader.batch_size or 1)
        self.usage = {"compress": TrainUsage(split), "finetune": TrainUsage(split)}
        self.training = Training(
            self.task,
            self.dm,
            self.tracker,
            self.cfg["trainer"],
            self.cfg["paths"]["runs_dir"],
            self.seed,
            self.usage,
            batch_size,
        )
        baseline, info = self._timed("baseline", self._baseline)
        _, compressed, plan, mac_model = self._timed("compress", self._compress, baseline)
        if self.finetune_epochs:
            self._timed(
                "finetune",
                lambda: self.training.fit(
                    compressed,
                    "finetune",
                    self.finetune_epochs,
                    "finetune",
                    None,
                    self.point_id,
                    batches_per_epoch=self.finetune_batches,
                ),
            )
        test = self._timed("evaluate", self.training.evaluate, compressed, "test")
        self.stage = "record"
        return self._record(baseline, compressed, plan, mac_model, info, test)

    def _baseline(self) -> tuple[nn.Module, dict[str, Any]]:
        pl.seed_everything(self.seed, workers=True, verbose=False)
        model = self.task.build_model()

        def train(m: nn.Module) -> dict[str, float]:
            # A pretrained file replaces training: the baseline stage only evaluates it.
            if self.task.load_pretrained(m) is None:
                epochs = int(self.cfg["budget"]["baseline_epochs"])
                key = baseline_key(self.cfg)
                self.training.fit(m, "baseline", epochs, "baseline", resume_key=key)
            return {**self.training.evaluate(m, "val"), **self.training.evaluate(m, "test")}

        info = load_or_train(
            model,
            self.cfg["paths"]["cache_dir"],
            baseline_key(self.cfg),
            train,
            writer=self.rank_zero,
        )
        pretrained = self.task.pretrained_path()
        if pretrained is not None:
            info = {**info, "pretrained": str(pretrained)}
            if info["source"] == "trained":
                info["source"] = "pretrained"
        return model, info

    def _compress(self, baseline: nn.Module) -> tuple[nn.Module, nn.Module, Any, MacModel]:
        """The method's model after compress (masked, or as the method left it), the slimmed model,
        the plan and the MAC model; the model is returned for probes such as scripts/timm_coverage.py."""
        # Reseed here, so the compress and finetune stages (calibration crops, augmentation) draw the
        # same random numbers whether the baseline was trained in this process or loaded from cache.
        pl.seed_everything(self.seed + 1, workers=True, verbose=False)
        if self.method.start == "scratch":
            model = self.task.build_model()
        else:
            model = copy.deepcopy(baseline)
        example = self.task.example_input()
        prunable = self.method.prepare(model, self.task.prunable_layers(model))
        ctx = CompressContext.build(
            model,
            example,
            prunable,
            self.task.protected_layers(model),
            macs_reduction=self.target.macs_reduction,
            round_to=self.target.round_to,
            seed=self.seed,
            compress_epochs=int(self.cfg["budget"]["compress_epochs"]),
            train=lambda epochs, hooks=None, recipe="finetune", **overrides: self.training.fit(
                model, "compress", epochs, recipe, hooks, overrides=overrides
            ),
            calib_loader=lambda fraction: self.usage["compress"].counted(
                self.dm.calib_dataloader(fraction)
            ),
            evaluate=self.training.val_score,
            evaluate_after=self.training.val_score,
            device=self.training.device,
            baseline_epochs=int(self.cfg["budget"]["baseline_epochs"]),
            traced=getattr(self, "traced", None),
        )
        plan = self.method.compress(ctx)
        return model, slim(model, plan, example, ctx.structure), plan, ctx.mac_model

    def _record(
        self,
        baseline: nn.Module,
        compressed: nn.Module,
        plan: Any,
        mac_model: MacModel,
        info: dict[str, Any],
        test: dict[str, float],
    ) -> dict[str, Any]:
        """Check that the DDP ranks agree, then (rank 0) save the deployable checkpoint, measure,
        close the tracker and assemble the ``ok`` record."""
        deployed = assemble.deployable(compressed)
        ranks = assemble.ranks_agree(deployed, plan)
        if not self.rank_zero:  # rank 0 alone measures and writes; this rank's part is done
            return {"status": "ok", "metric": f"test/{self.task.metric}", "test": test}
        checkpoint = assemble.save_checkpoint(self, plan, deployed)
        measured = assemble.measure(
            self.task,
            baseline,
            compressed,
            deployed,
            plan,
            mac_model,
            self.cfg["budget"]["latency"],
        )
        self.tracker.log_layers(measured.layer_rows)
        summary = {
            **test,
            "macs_reduction": measured.achieved_macs_reduction,
            "macs": measured.macs_analytic,
        }
        wandb = self.tracker.finish(summary)
        return assemble.completed(self, measured, plan, info, test, checkpoint, ranks, wandb)


def budget_epochs(samples: int, split: int, batch_size: int = 1) -> tuple[int, int | None]:
    """``samples`` training samples as (epochs, batches per epoch): as few epochs as hold them,
    each shortened alike to ``ceil(samples / epochs / batch_size)`` batches; None when the epochs
    are whole (every batch of the split). E.g. 7,500 samples of a 5,000 split at batch 128:
    2 epochs of 30 batches (7,680 samples: the last batch of each epoch is whole)."""
    if samples <= 0:
        return 0, None
    epochs = math.ceil(samples / split)
    if samples == epochs * split:
        return epochs, None
    return epochs, math.ceil(samples / epochs / batch_size)
