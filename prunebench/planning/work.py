"""How many samples a point's stages read: the work a plan turns into hours.

The stage lengths are the budget's (``baseline_epochs``, ``compress_epochs``,
``finetune_epochs`` or ``finetune_samples``) shaped by each method as its ``compress`` spends
them (``methods/*.py``): KCP finetunes ``finetune_epochs_per_step`` between its steps, TRP and
SPP train ``compress_epochs``, LAPP and the ``scratch`` control train from scratch as long as the
baseline (or ``method.epochs``), CaP reads ``calib_fraction`` of the split forward only, and the
one-shot controls train nothing before their finetune. Split sizes are the budget's caps, or —
where a tier says "every sample" — the dataset's published size less the validation hold-out.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any

# Published split sizes (train, test) of the datasets behind ``data=disk``, for tiers that read
# every sample. ImageNet: ILSVRC-2012 train / val; VOC: SBD trainaug / VOC 2012 val; SceneFlow:
# PSMNet's train list (FlyingThings3D TRAIN + Monkaa + Driving) / FlyingThings3D TEST;
# KITTI 2015: 200 training pairs split 160 / 40 (tasks/stereo/disk.py).
DISK_SIZES: dict[str, tuple[int, int]] = {
    "cifar10": (50_000, 10_000),
    "imagenet": (1_281_167, 50_000),
    "voc": (10_582, 1_449),
    "cityscapes": (2_975, 500),
    "sceneflow": (35_454, 4_370),
    "kitti2015": (160, 40),
}
SIZE_KEYS = ("train", "val", "test")


def dataset_of(task: dict[str, Any]) -> str:
    """The dataset a task reads from disk: its ``dataset`` key, else its name's first word
    (``imagenet_resnet50`` → ``imagenet``)."""
    return str(task.get("dataset") or task["name"].split("_")[0])


def split_sizes(cfg: dict[str, Any]) -> tuple[dict[str, int | None], str]:
    """Train, val and test sizes of a resolved run config, and where they come from."""
    caps = cfg["budget"]["data"]
    if all(caps.get(k) is not None for k in SIZE_KEYS):
        return {k: int(caps[k]) for k in SIZE_KEYS}, "the budget's sizes"
    data, task = cfg["data"], cfg["task"]
    if data["source"] == "embedded":
        module = importlib.import_module(task["_target_"].rsplit(".", 1)[0])
        full = getattr(module, "EMBEDDED_FULL", {})
        sizes = {k: caps[k] if caps.get(k) is not None else full.get(k) for k in SIZE_KEYS}
        return sizes, "the budget's sizes, else the embedded set's full size"
    name = dataset_of(task)
    if name not in DISK_SIZES:
        return {k: caps.get(k) for k in SIZE_KEYS}, f"no published size of {name!r}"
    train, test = DISK_SIZES[name]
    if name == "imagenet":
        held = int(data.get("val_per_class", 10)) * int(task.get("num_classes", 1000))
    else:
        held = round(float(data.get("val_fraction", 0.1)) * train)
    full = {"train": train - held, "val": held, "test": test}
    sizes = {k: min(int(caps[k]), full[k]) if caps.get(k) is not None else full[k] for k in full}
    return sizes, f"{name}'s published sizes less the validation hold-out"


@dataclass
class Work:
    """Samples one point reads, by stage.

    Attributes:
        baseline: training samples of the dense baseline (0: cached or pretrained).
        compress: training samples inside the method (forward, backward, step).
        finetune: training samples of the finetune stage.
        forward: samples read forward only (validation passes, tests, CaP's calibration).
        notes: what the figures leave out or assume.
    """

    baseline: int = 0
    compress: int = 0
    finetune: int = 0
    forward: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def post_baseline(self) -> int:
        """The training after the baseline, what the matched controls finetune for."""
        return self.compress + self.finetune


def compress_epochs(method: dict[str, Any], budget: dict[str, Any], target: float) -> float | None:
    """Epochs of training inside the method's compress stage (None: a method this does not
    know; CaP's calibration is forward only, see :func:`point_work`)."""
    name = method["name"]
    if name in ("dense", "magnitude", "random", "cap"):
        return 0.0
    if name == "kcp":  # a finetune between steps, none after the last (the finetune stage)
        steps = math.ceil(target / float(method["step_reduction"]) - 1e-9)
        return float(max(steps - 1, 0) * int(method["finetune_epochs_per_step"]))
    if name in ("trp", "spp"):
        return float(budget["compress_epochs"])
    if name == "lapp":
        return float(max(budget["baseline_epochs"], budget["compress_epochs"]))
    if name == "scratch":
        return float(method.get("epochs") or budget["baseline_epochs"])
    return None


BASELINE_WORK = ("train", "evaluate", "none")


def point_work(
    cfg: dict[str, Any], finetunes: bool, baseline: str, sizes: dict[str, int | None]
) -> Work:
    """The samples of one point of the resolved run config ``cfg``.

    Args:
        finetunes: whether the method runs the finetune stage (its ``finetune``).
        baseline: what this point does for the shared baseline: ``train`` it, ``evaluate`` a
            pretrained file, or ``none`` (cached, or an earlier point of the plan makes it).
        sizes: the train/val/test split sizes (:func:`split_sizes`).
    """
    if baseline not in BASELINE_WORK:
        raise ValueError(f"baseline={baseline!r}; choices: {BASELINE_WORK}")
    budget, method = cfg["budget"], cfg["method"]
    train, val, test = sizes["train"], sizes["val"] or 0, sizes["test"] or 0
    work = Work()
    if train is None:
        work.notes.append("the training split's size is unknown: set budget.data.train")
        return work
    epochs = compress_epochs(method, budget, float(cfg["target"]["macs_reduction"]))
    if epochs is None:
        work.notes.append(f"method {method['name']!r}: its compress stage is not estimated")
        epochs = 0.0
    work.compress = round(epochs * train)
    if method["name"] == "cap":
        work.forward += round(float(method["calib_fraction"]) * train)
        work.notes.append("CaP's search passes over the validation split are not counted")
    ft_epochs = 0.0
    if finetunes:
        samples = budget.get("finetune_samples")
        work.finetune = (
            int(samples) if samples is not None else int(budget["finetune_epochs"]) * train
        )
        ft_epochs = work.finetune / train
    trained_epochs = epochs + ft_epochs
    if baseline == "train":
        work.baseline = int(budget["baseline_epochs"]) * train
        trained_epochs += int(budget["baseline_epochs"])
    if baseline != "none":  # the baseline's own validation and test passes
        work.forward += val + test
    # one validation pass per training epoch, and the test pass of the compressed model
    work.forward += math.ceil(trained_epochs) * val + test
    return work
