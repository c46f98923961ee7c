"""The four stages — baseline, compress, finetune, evaluate — for any task × method.

The pipeline never asks which method or task it runs: a method's shape (one-shot, iterative,
during-training) lives entirely inside ``Method.compress`` (see ``prunebench.method``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from prunebench import assemble, distributed, report
from prunebench.baseline import baseline_key, load_or_train
from prunebench.errors import ConfigError, PrunebenchError, RecordError
from prunebench.method import CompressContext, Method, TrainingHooks
from prunebench.module import KeepBest, PruneModule
from prunebench.records import file_lock, read_record, write_record
from prunebench.resume import StageCheckpoint
from prunebench.slim import slim
from prunebench.structure import MacModel, Structure
from prunebench.target import validate_target
from prunebench.tracking import Tracker
from prunebench.usage import TrainUsage
from prunebench.validate import check_writable, validate_config
from tasks.base import Task

VOLATILE_KEYS = ("paths", "logger", "overwrite", "force")  # do not change a run's numbers
RESUMABLE_STAGES = ("baseline", "finetune")  # no method state outside Lightning's checkpoint


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


def round_to(cfg: dict[str, Any], method: Method) -> int:
    """``target.round_to`` (an integer ≥ 1, checked by ``validate_config``); > 1 only for a method
    whose plan is the core's filter solve (it would otherwise be silently ignored)."""
    value = cfg["target"].get("round_to", 1)
    if value > 1 and method.uses_target and not method.core_filter_solve:
        raise ConfigError(
            f"target.round_to={value} rounds the filter plans the core solves (methods magnitude, "
            f"random); method {cfg['method']['name']!r} sets its widths itself: use round_to=1"
        )
    return value


def point_id(cfg: dict[str, Any]) -> str:
    """A run point's identity: readable fields plus a hash of everything that changes numbers
    (``target.round_to`` only when it rounds, so records made before the option keep their id)."""
    ident = {k: v for k, v in cfg.items() if k not in VOLATILE_KEYS}
    if ident.get("target", {}).get("round_to", 1) == 1:
        ident["target"] = {k: v for k, v in ident["target"].items() if k != "round_to"}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[
        :10
    ]
    return (
        f"{cfg['task']['name']}-{cfg['method']['name']}-r{cfg['target']['macs_reduction']}"
        f"-s{cfg['seed']}-{cfg['budget']['name']}-{cfg['data']['source']}-{digest}"
    )


class Pipeline:
    """One run point: ``Pipeline(cfg).run()`` returns the record it wrote."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        validate_config(self.cfg)
        validate_target(self.cfg["target"]["macs_reduction"])
        self.seed = int(self.cfg["seed"])
        self.task: Task = _instantiate("task", self.cfg["task"])
        method_cfg = {k: v for k, v in self.cfg["method"].items() if k != "name"}
        self.method: Method = _instantiate("method", method_cfg)
        if self.method.start not in ("baseline", "scratch"):
            raise ConfigError(f"method start={self.method.start!r}; choices: baseline, scratch")
        self.round_to = round_to(self.cfg, self.method)
        if self.task.pretrained_path() is not None:  # a bad file fails now, not after the data
            self.task.load_pretrained(self.task.build_model())
        self.point_id = point_id(self.cfg)
        self.record_path = (
            Path(self.cfg["paths"]["results_dir"])
            / "records"
            / self.cfg["task"]["name"]
            / f"{self.point_id}.json"
        )
        self.stage_seconds: dict[str, float] = {}
        self._val_batches: list | None = None
        self.usage: dict[str, TrainUsage] = {}
        self.val_passes = 0  # validation-split passes the compress stage made (model selection)
        self.stage = "setup"  # the stage running now (a failed record names it)
        self.rank_zero = distributed.is_rank_zero()  # the one process that writes (DDP)

    # -- training under the core's loop -------------------------------------------------------
    def fit(
        self,
        model: nn.Module,
        stage: str,
        epochs: int,
        recipe: str,
        hooks: TrainingHooks | None = None,
        resume_key: str | None = None,
        overrides: dict | None = None,
    ) -> None:
        """Train ``model`` in place for ``epochs``; keep the best validation epoch's weights.

        With ``resume_key`` (a stage in ``RESUMABLE_STAGES``), every epoch ends with a Lightning
        checkpoint under ``runs/resume/<resume_key>/<stage>/`` and a rerun after a kill resumes
        from it (``prunebench.resume``)."""
        if epochs <= 0:
            return
        if stage in self.usage:
            self.usage[stage].add_passes(epochs)
        pl.seed_everything(self.seed + sum(map(ord, stage)), workers=True, verbose=False)
        spec = self.task.recipe[recipe]
        if overrides:  # a method's own change to the recipe (e.g. LAPP's warm-up)
            spec = dataclasses.replace(spec, **overrides)
        module = PruneModule(model, self.task, spec, stage, hooks, seed=self.seed)
        best = KeepBest(f"{stage}/val/{self.task.metric}", self.task.higher_is_better)
        keep_best = hooks is None or hooks.keep_best_epoch
        saver = None
        if resume_key is not None and hooks is None and stage in RESUMABLE_STAGES:
            saver = StageCheckpoint(self.cfg["paths"]["runs_dir"], resume_key, stage)
        ckpt_path = saver.ckpt_path if saver else None
        if ckpt_path:
            print(f"resuming the {stage} stage at epoch {saver.next_epoch} from {ckpt_path}")
        trainer = pl.Trainer(
            max_epochs=epochs,
            logger=self.tracker.lightning_logger(),
            callbacks=([best] if keep_best else []) + (saver.callbacks() if saver else []),
            enable_checkpointing=saver is not None,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=self.cfg["paths"]["runs_dir"],
            **self.cfg["trainer"],
        )
        trainer.fit(module, datamodule=self.dm, ckpt_path=ckpt_path)
        distributed.broadcast_state(model)
        if saver:
            distributed.barrier()
            if self.rank_zero:
                saver.clear()

    def evaluate(self, model: nn.Module, split: str = "test") -> dict[str, float]:
        module = PruneModule(model, self.task, self.task.recipe["baseline"], "eval")
        trainer = pl.Trainer(
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            **self.cfg["trainer"],
        )
        if split == "val":  # PruneModule logs val under the stage prefix
            out = trainer.validate(module, datamodule=self.dm, verbose=False)[0]
            return {f"val/{k.split('/')[-1]}": float(v) for k, v in out.items()}
        out = trainer.test(module, datamodule=self.dm, verbose=False)[0]
        extra = self.task.extra_test_metrics(model, self.device)
        return {k: float(v) for k, v in out.items()} | {f"test/{k}": v for k, v in extra.items()}

    @property
    def device(self) -> str:
        """Where the trainer runs: ``"cuda"`` for a GPU trainer on a machine with one."""
        gpu = self.cfg["trainer"].get("accelerator") in ("gpu", "cuda", "auto")
        return "cuda" if gpu and torch.cuda.is_available() else "cpu"

    @torch.no_grad()
    def val_metric(self, model: nn.Module) -> float:
        """The primary metric on the validation split: a plain no-grad loop (methods that
        select on it call it many times; no Lightning trainer per call). The model is moved to
        the trainer's device for the pass and back, and left in the mode it was in."""
        device = self.device
        if self._val_batches is None:
            self._val_batches = [self.task.split_batch(b) for b in self.dm.val_dataloader()]
        metric = self.task.metrics()[self.task.metric].to(device)
        was_training, home = model.training, next(model.parameters()).device
        model.eval().to(device)
        try:
            for x, y in self._val_batches:
                metric.update(model(x.to(device)), y.to(device))
        finally:
            model.train(was_training).to(home)
        self.val_passes += 1
        return float(metric.compute())

    def val_score(self, model: nn.Module) -> float:
        """:meth:`val_metric` oriented so that higher is better (a lower-is-better metric such as
        stereo EPE is negated): what ``CompressContext.evaluate`` gives methods."""
        value = self.val_metric(model)
        return value if self.task.higher_is_better else -value

    def _timed(self, stage: str, fn, *args):
        self.stage = stage
        start = time.perf_counter()
        out = fn(*args)
        self.stage_seconds[stage] = round(time.perf_counter() - start, 3)
        return out

    # -- the stages -------------------------------------------------------------------------
    def _baseline(self) -> tuple[nn.Module, dict[str, Any]]:
        pl.seed_everything(self.seed, workers=True, verbose=False)
        model = self.task.build_model()

        def train(m: nn.Module) -> dict[str, float]:
            # A pretrained file replaces training: the baseline stage only evaluates it.
            if self.task.load_pretrained(m) is None:
                epochs = int(self.cfg["budget"]["baseline_epochs"])
                self.fit(m, "baseline", epochs, "baseline", resume_key=baseline_key(self.cfg))
            return {**self.evaluate(m, "val"), **self.evaluate(m, "test")}

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
        if self.method.start == "scratch":
            pl.seed_everything(self.seed + 1, workers=True, verbose=False)
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
            macs_reduction=float(self.cfg["target"]["macs_reduction"]),
            round_to=self.round_to,
            seed=self.seed,
            compress_epochs=int(self.cfg["budget"]["compress_epochs"]),
            train=lambda epochs, hooks=None, recipe="finetune", **overrides: self.fit(
                model, "compress", epochs, recipe, hooks, overrides=overrides
            ),
            calib_loader=lambda fraction: self.usage["compress"].counted(
                self.dm.calib_dataloader(fraction)
            ),
            evaluate=self.val_score,
            device=self.device,
            baseline_epochs=int(self.cfg["budget"]["baseline_epochs"]),
            traced=getattr(self, "traced", None),
        )
        plan = self.method.compress(ctx)
        return model, slim(model, plan, example, ctx.structure), plan, ctx.mac_model

    def run(self) -> dict[str, Any]:
        """Run the stages and write the record; a point whose valid record is ``ok`` is not run
        again unless ``force=true`` (or its old name ``overwrite=true``). A run that fails leaves
        a ``failed`` record naming the stage and reason (never in place of an ``ok`` one) and
        re-raises; an input error (:class:`PrunebenchError`) writes nothing. One process at a
        time runs a point (a file lock beside its record, held by DDP's rank 0)."""
        if not self.rank_zero:  # Lightning started this rank: rank 0 decided to run the point
            return self._run_unlocked(None)
        check_writable(self.record_path.parent, "paths.results_dir")
        check_writable(Path(self.cfg["paths"]["runs_dir"]), "paths.runs_dir")
        with file_lock(self.record_path):
            previous = self._previous()
            force = self.cfg.get("force", False) or self.cfg.get("overwrite", False)
            if previous and previous["status"] == "ok" and not force:
                print(f"record exists: {self.record_path} (pass force=true to run it again)")
                report.print_summary(previous, self.record_path)
                self.outcome = "skipped"
                return previous
            return self._run_unlocked(previous)

    def _previous(self) -> dict[str, Any] | None:
        """This point's existing record, if it is valid (an invalid one is run again)."""
        if not self.record_path.exists():
            return None
        try:
            return read_record(self.record_path)
        except RecordError as exc:
            print(f"warning: {exc}; running the point again")
            return None

    def _run_unlocked(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        _quiet_lightning()
        self.tracker = Tracker({"enabled": False}, self.point_id, self.cfg)
        try:
            record = self._stages()
        except PrunebenchError:
            self.tracker.finish({"status": "failed"})
            raise  # the input is wrong, not the run: nothing is written
        except Exception as exc:
            self.outcome = "failed"
            if self.rank_zero and not (previous and previous["status"] == "ok"):
                write_record(assemble.failed(self, exc), self.record_path)
            self.tracker.finish({"status": "failed"})
            raise
        self.outcome = "ran"
        if self.rank_zero:
            write_record(record, self.record_path)
            report.print_summary(record, self.record_path)
        return record

    def check_method(self) -> tuple[Structure, MacModel]:
        """Trace a freshly built, prepared model and ask the method whether it applies
        (:meth:`Method.refusal`); a refusal is one :class:`ConfigError` line naming the method, the
        model and the reason, before any data is read or anything trains. Returns the trace, which
        the compress stage reuses (the same architecture)."""
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
            macs_reduction=float(self.cfg["target"]["macs_reduction"]),
            traced=(structure, mac_model),
        )
        reason = self.method.refusal(ctx)
        if reason:
            raise ConfigError(f"{refuse}: {reason}")
        return structure, mac_model

    def _stages(self) -> dict[str, Any]:
        self.traced = self.check_method()
        self.dm = self.task.datamodule(self.cfg["data"], self.cfg["budget"]["data"], self.seed)
        logger = self.cfg["logger"] if self.rank_zero else {"enabled": False}
        self.tracker = Tracker(logger, self.point_id, self.cfg)
        split = len(self.dm.train_dataloader().dataset)
        self.usage = {"compress": TrainUsage(split), "finetune": TrainUsage(split)}
        baseline, info = self._timed("baseline", self._baseline)
        _, compressed, plan, mac_model = self._timed("compress", self._compress, baseline)
        if self.finetune_epochs:
            self._timed(
                "finetune",
                lambda: self.fit(
                    compressed, "finetune", self.finetune_epochs, "finetune", None, self.point_id
                ),
            )
        test = self._timed("evaluate", self.evaluate, compressed, "test")
        self.stage = "record"
        return assemble.completed(self, baseline, compressed, plan, mac_model, info, test)

    @property
    def finetune_epochs(self) -> int:
        """The budget's finetune epochs, or 0 for a method that does not finetune. Controls run
        without finetuning with ``budget.finetune_epochs=0`` (the record says 0 and the
        leaderboard pools them apart)."""
        return int(self.cfg["budget"]["finetune_epochs"]) if self.method.finetune else 0
