"""Budget-matched controls: what a method point's controls must be, and which control records
pair with which method records.

A method point's controls run at its *achieved* MACs reduction with the same post-baseline
training (samples of the training split read after the shared baseline: compress plus finetune),
the same seed and the same baseline. ``magnitude`` and ``random`` get that training as their
finetune (``budget.finetune_samples``); a method that trains from scratch (LAPP, TRP with
``start=scratch``) also gets the ``scratch`` control: its final architecture trained from a fresh
initialisation for the method's total epochs (Liu et al., ICLR 2019). scripts/controls.py leaves
it out when the ``scratch`` method cannot build that architecture (TRP's low-rank pairs).

Pairing (the leaderboard): a control record pairs with a method record of the same table when
seed and baseline agree (hash and test metrics: the same weights), the achieved reductions are
within ``MACS_TOLERANCE`` and the training matches; a control asked for this match that could not reach it (its target, or its
``matched_to`` note when the command had to lower the target to a feasible one, is the method's
achieved reduction) pairs as the *nearest feasible* one, and says so.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from hydra.utils import get_class

CONTROLS = ("magnitude", "random", "scratch")  # the methods the controls command launches
FINETUNED_CONTROLS = ("magnitude", "random")
MACS_TOLERANCE = 0.01  # ±1 pt of dense MACs
SAMPLES_TOLERANCE = 0.01  # relative: shortened epochs end on a whole batch


def post_baseline_samples(record: dict[str, Any]) -> int | None:
    """Training-split samples read after the shared baseline (compress + finetune stages);
    None for a record from before ``train_samples`` existed."""
    usage = record.get("train_samples")
    if not usage:
        return None
    return int(usage["compress"]["seen"]) + int(usage["finetune"]["seen"])


def from_scratch(record: dict[str, Any]) -> bool:
    """Whether the method started from a fresh initialisation, not the shared baseline: the
    record's ``method_start``; for older records the ``start`` hyper-parameter (TRP), else the
    method class's (LAPP)."""
    start = record.get("method_start") or record["method_hparams"].get("start")
    if start is None:
        target = record.get("config", {}).get("method", {}).get("_target_")
        try:
            start = getattr(get_class(target), "start", "baseline") if target else "baseline"
        except (ImportError, AttributeError, ValueError):
            start = "baseline"
    return start == "scratch"


def total_samples(record: dict[str, Any]) -> int | None:
    """All the training the compressed model had: the baseline's epochs over the split plus the
    post-baseline samples; for a from-scratch method, its own training alone."""
    post = post_baseline_samples(record)
    if post is None or from_scratch(record):
        return post
    split = int(record["train_samples"]["split"])
    return int(record["config"]["budget"]["baseline_epochs"]) * split + post


def epochs_of(samples: int | None, record: dict[str, Any]) -> float | None:
    """``samples`` in epochs of the record's training split."""
    if samples is None or not record.get("train_samples"):
        return None
    return samples / int(record["train_samples"]["split"])


@dataclass
class ControlSpec:
    """One control point to run for one method record: the ``run.py`` overrides."""

    method: str
    seed: int
    target: float
    overrides: list[str] = field(default_factory=list)


def control_target(record: dict[str, Any]) -> float:
    """The control's ``target.macs_reduction``: the method's achieved reduction to 0.1 pt."""
    return min(0.999, max(0.001, round(float(record["achieved_macs_reduction"]), 3)))


def control_specs(record: dict[str, Any]) -> list[ControlSpec]:
    """The controls one ``ok`` method record needs (see the module docstring)."""
    post = post_baseline_samples(record)
    if post is None:
        raise ValueError(f"{record['point_id']}: no train_samples (a record from before them)")
    seed, target = int(record["seed"]), control_target(record)
    common = [
        f"task={record['task']}",
        f"budget={record['budget']}",
        f"data={record['data_source']}",
        f"seed={seed}",
        f"target.macs_reduction={target}",
    ]
    specs = [
        ControlSpec(m, seed, target, [f"method={m}", *common, f"budget.finetune_samples={post}"])
        for m in FINETUNED_CONTROLS
    ]
    if from_scratch(record):
        widths = ",".join(f"{k}:{v}" for k, v in sorted(record["plan_widths"].items()))
        hp = record["method_hparams"]
        epochs = math.ceil(total_samples(record) / int(record["train_samples"]["split"]))
        specs.append(
            ControlSpec(
                "scratch",
                seed,
                target,
                [
                    "method=scratch",
                    *common,
                    f"method.widths={{{widths}}}",
                    f"method.epochs={epochs}",
                    f"method.bypass={hp.get('bypass', 'none')}",
                    f"method.warmup_epochs={float(hp.get('warmup_epochs', 0.0))}",
                ],
            )
        )
    return specs


def _close(a: int | None, b: int | None) -> bool:
    if a is None or b is None:
        return False
    return abs(a - b) <= SAMPLES_TOLERANCE * max(a, b)


def training_matches(control: dict[str, Any], method: dict[str, Any]) -> bool:
    """Whether ``control`` had ``method``'s training: the same post-baseline samples (a finetuned
    control), or the same architecture and total samples (the scratch control)."""
    if control["method"] == "scratch":
        return control["plan_widths"] == method["plan_widths"] and _close(
            total_samples(control), total_samples(method)
        )
    post = post_baseline_samples(method)
    if post is None:  # a method record from before train_samples: its training is unknown
        return False
    return control.get("finetune_samples") == post or _close(post_baseline_samples(control), post)


@dataclass
class Pairing:
    """One method record and its control of one kind (None: no matched control)."""

    method: dict[str, Any]
    control: dict[str, Any] | None
    status: str  # "matched" | "nearest feasible" | "no matched control"

    def delta(self) -> float | None:
        """The method's metric minus the control's (same seed and baseline), or None."""
        if self.control is None:
            return None
        k = self.method["metric"]
        return float(self.method["test"][k]) - float(self.control["test"][k])


def baseline_weights(r: dict[str, Any]) -> tuple[str, str]:
    """What identifies the dense weights a record started from: the baseline hash and its test
    metrics. The hash covers the recipe, not the thread count, and bf16 sums differ across
    thread counts, so a baseline retrained on another count shares the hash but not the weights
    (ResNet-50's stand-in: 34.65 % on one thread, 31.55 % on two)."""
    return r["baseline"]["hash"], json.dumps(r["baseline"].get("test"), sort_keys=True)


def baseline_conflicts(records: list[dict[str, Any]]) -> list[str]:
    """One line per baseline (task, data, tier, hash, seed) whose ``ok`` records disagree on its
    test metrics: they started from different weights and are never paired with each other."""
    seen: dict[tuple, dict[str, tuple]] = defaultdict(dict)
    for r in records:
        if r["status"] != "ok" or not r.get("baseline"):
            continue
        h, test = baseline_weights(r)
        threads = (r["baseline"].get("trained_by") or {}).get("threads")
        seen[(r["task"], r["data_source"], r["budget"], h, r["seed"])].setdefault(
            test, (threads, r["point_id"])
        )
    lines = []
    for (task, data, tier, h, seed), tests in sorted(seen.items()):
        if len(tests) > 1:
            kinds = "; ".join(
                f"{t} (threads {threads}, e.g. {point})" for t, (threads, point) in tests.items()
            )
            lines.append(
                f"{task} ({data}, {tier}) seed {seed}: records of baseline {h} disagree on its "
                f"test metrics, so they started from different weights and are not paired: {kinds}"
            )
    return lines


def pair(method: dict[str, Any], candidates: list[dict[str, Any]], kind: str) -> Pairing:
    """``method``'s control of kind ``kind`` among ``candidates`` (``ok`` records of one table)."""
    eligible = [
        c
        for c in candidates
        if c["method"] == kind
        and c["seed"] == method["seed"]
        and baseline_weights(c) == baseline_weights(method)
        and training_matches(c, method)
    ]
    if not eligible:
        return Pairing(method, None, "no matched control")
    gap = lambda c: abs(c["achieved_macs_reduction"] - method["achieved_macs_reduction"])  # noqa: E731
    best = min(eligible, key=lambda c: (gap(c), c["point_id"]))
    if gap(best) <= MACS_TOLERANCE + 1e-9:
        return Pairing(method, best, "matched")
    wanted = control_target(method)
    asked = [best["target_macs_reduction"], best.get("config", {}).get("matched_to")]
    asked = any(a is not None and math.isclose(a, wanted, abs_tol=5e-4) for a in asked)
    return (
        Pairing(method, best, "nearest feasible")
        if asked
        else Pairing(method, None, "no matched control")
    )


# Two-sided 97.5 % quantiles of Student's t by degrees of freedom (1–10); 1.96 beyond.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
NOISE_RULE = (
    "Noise rule: a paired difference is *beyond noise* when |mean| > t · std / √n, with t the "
    "two-sided 95 % Student-t quantile for n − 1 degrees of freedom (a paired t-test at 5 %; "
    "4.30 for n = 3); with n < 2 it cannot be told from noise."
)


def beyond_noise(diffs: list[float]) -> bool:
    """The paired t-test of :data:`NOISE_RULE` on per-seed differences."""
    if len(diffs) < 2:
        return False
    t = T975[len(diffs) - 2] if len(diffs) - 1 <= len(T975) else 1.96
    sd = statistics.stdev(diffs)
    return abs(statistics.fmean(diffs)) > t * sd / math.sqrt(len(diffs))
