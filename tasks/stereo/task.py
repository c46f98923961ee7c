"""Stereo matching with PSMNet (Chang & Chen, CVPR 2018): SceneFlow and KITTI 2015.

Metrics (``tasks.stereo.metrics``): EPE (primary, pixels, lower is better), D1 and the 3-px
error, all pixel-weighted over valid pixels. Every record also carries the real Middlebury
motorcycle pair (``tasks.stereo.embedded.motorcycle``) as extra test metrics
``test/motorcycle/{epe,d1,3px}``, whatever the data source.

**Tiers.** The ``paper`` tier is the paper's model (maxdisp 192, width 1, SPP pools 64/32/16/8,
256×512 training crops; 184.7 GMACs per pair, 5,224,768 parameters). A 256×512 pair is far too
slow for minutes on a CPU, so the task's ``cpu:`` and ``smoke:`` blocks may carry a ``model:``
override — ``input_size`` (the training crop and the MACs/latency input), ``maxdisp``, a channel
``width`` multiplier and scaled ``spp_pools`` — applied when ``tier`` (``${budget.name}``) names
that block. The override is part of the resolved task config, so every record declares the
model it measured. Other tiers (``paper``) use the top-level, paper values.

**What may be pruned** (docs/architecture.md: only channels whose consumers the dependency graph sees):
the output channels of convs whose only reader is the next conv — every BasicBlock's ``conv1``,
the second ``firstconv`` conv, ``lastconv``'s 3×3 conv, ``dres0``/``dres1``'s first 3D conv, each
hourglass's ``conv1`` and ``conv3`` and each classifier's first 3D conv. Not pruned: the residual
streams (the extractor's stages, ``cost0``, the hourglass ``pre``/``post`` skips between
hourglasses), the SPP branches (read through a concatenation), hourglass ``conv4`` (read by a
transposed conv), and **protected**: the first conv (it reads the image), ``lastconv``'s 1×1 conv
(its 32 outputs are the cost volume's channel layout, built by shifting and concatenating, which
the dependency graph cannot follow) and the three classifiers' 3D convs to 1 channel (their
outputs are the disparity costs the soft-argmin regresses).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchmetrics
from torch import nn

from prunebench.errors import ConfigError
from prunebench.task import Splits, Task
from tasks.stereo.data import ArrayStereo, FileStereo
from tasks.stereo.disk import hold_out, kitti2015_lists, sceneflow_lists
from tasks.stereo.embedded import motorcycle, render_set
from tasks.stereo.io import read_kitti_disparity, read_pfm
from tasks.stereo.metrics import stereo_loss, stereo_metrics
from tasks.stereo.psmnet import PAPER_POOLS, PSMNet, check_input

DATASETS = ("sceneflow", "kitti2015")
EMBEDDED_FULL = {"train": 2000, "val": 200, "test": 400}  # generated when a tier says "all"
KITTI_EVAL_CROP = (368, 1232)  # PSMNet's bottom-right validation crop (h, w)


class StereoTask(Task):
    """PSMNet on SceneFlow or KITTI 2015 (or the embedded rendered pairs).

    Args:
        name: config name.
        dataset: ``sceneflow`` or ``kitti2015`` (the disk layout; the embedded set is shared).
        recipe: stage → optimiser recipe (``prunebench.task.OptimSpec``; Adam for PSMNet).
        maxdisp, width, spp_pools, input_size: the paper model and crop (see the module
            docstring for the tier overrides).
        tier: the budget's name (``${budget.name}``); picks a ``cpu``/``smoke`` model override.
        folders: SceneFlow folder names (``tasks.stereo.disk.SCENEFLOW_FOLDERS``).
        init_weights: a state-dict file every built model starts from (KITTI: the SceneFlow
            checkpoint, whose ``module.`` prefixes are stripped), or None.
        paper / cpu / smoke: the tiers' task-specific numbers (read by ``conf/budget``).
    """

    metric = "epe"
    higher_is_better = False

    def __init__(
        self,
        name: str,
        dataset: str,
        recipe: dict,
        maxdisp: int = 192,
        width: float = 1.0,
        spp_pools: tuple[int, ...] = PAPER_POOLS,
        input_size: tuple[int, int] = (256, 512),
        tier: str = "paper",
        folders: dict | None = None,
        init_weights: str | None = None,
        paper: dict | None = None,
        cpu: dict | None = None,
        smoke: dict | None = None,
    ) -> None:
        super().__init__(name, recipe, paper)
        if dataset not in DATASETS:
            raise ConfigError(f"task.dataset={dataset!r}; choices: {DATASETS}")
        self.dataset, self.folders, self.init_weights = dataset, dict(folders or {}), init_weights
        self.cpu, self.smoke = dict(cpu or {}), dict(smoke or {})
        spec = {
            "maxdisp": maxdisp,
            "width": width,
            "spp_pools": spp_pools,
            "input_size": input_size,
        }
        spec.update({"cpu": self.cpu, "smoke": self.smoke}.get(tier, {}).get("model") or {})
        self.maxdisp, self.width = int(spec["maxdisp"]), float(spec["width"])
        self.spp_pools = tuple(int(p) for p in spec["spp_pools"])
        self.input_size = tuple(int(v) for v in spec["input_size"])
        check_input(*self.input_size, self.maxdisp, self.spp_pools)
        self._motorcycle: ArrayStereo | None = None

    def build_model(self) -> nn.Module:
        model = PSMNet(self.maxdisp, self.width, self.spp_pools)
        if self.init_weights:
            path = Path(self.init_weights).expanduser()
            if not path.is_file():
                raise ConfigError(f"task.init_weights: {path} is not a file")
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
            model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
        return model

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        gen = torch.Generator().manual_seed(0)
        return torch.randn(batch_size, 6, *self.input_size, generator=gen)

    def prunable_layers(self, model: nn.Module) -> list[str]:
        fe = "feature_extraction."
        blocks = [
            n
            for n, _ in model.named_modules()
            if n.startswith(fe + "layer") and n.endswith(".conv1.0.0")
        ]
        hourglass = [f"dres{i}.conv{j}.0.0" for i in (2, 3, 4) for j in (1, 3)]
        return [
            fe + "firstconv.2.0",
            *blocks,
            fe + "lastconv.0.0",
            "dres0.0.0",
            "dres1.0.0",
            *hourglass,
            *(f"classif{i}.0.0" for i in (1, 2, 3)),
        ]

    def protected_layers(self, model: nn.Module) -> list[str]:
        fe = "feature_extraction."
        return [fe + "firstconv.0.0", fe + "lastconv.2", *(f"classif{i}.2" for i in (1, 2, 3))]

    def loss(self, output, batch) -> torch.Tensor:
        return stereo_loss(output, batch[1], self.maxdisp)

    def metrics(self) -> dict[str, torchmetrics.Metric]:
        return stereo_metrics(self.maxdisp)

    @torch.no_grad()
    def extra_test_metrics(self, model: nn.Module, device: str = "cpu") -> dict[str, float]:
        """EPE, D1 and 3-px error on the motorcycle pair, keyed ``motorcycle/<metric>``."""
        if self._motorcycle is None:
            self._motorcycle = ArrayStereo(motorcycle(self.maxdisp))
        x, gt = self._motorcycle[0]
        was_training, home = model.training, next(model.parameters()).device
        model.eval().to(device)
        try:
            pred = model(x[None].to(device)).cpu()
        finally:
            model.train(was_training).to(home)
        out = {}
        for key, metric in self.metrics().items():
            metric.update(pred, gt[None])
            out[f"motorcycle/{key}"] = float(metric.compute())
        return out

    def embedded_splits(self, data: dict, sizes: dict) -> Splits:
        """Rendered pairs; ``sizes`` caps each split (None: ``EMBEDDED_FULL``)."""
        s = int(data.get("embedded_seed", 0))
        h, w = self.input_size
        return tuple(
            ArrayStereo(
                render_set(
                    sizes[k] if sizes[k] is not None else EMBEDDED_FULL[k],
                    h,
                    w,
                    self.maxdisp,
                    s + i,
                )
            )
            for i, k in enumerate(("train", "val", "test"))
        )

    def disk_splits(self, data: dict, sizes: dict) -> tuple[FileStereo, FileStereo, FileStereo]:
        if self.dataset == "sceneflow":
            train, test = sceneflow_lists(data.get("root"), self.folders)
            read, mode, crop = read_pfm, "pad16", None
        else:
            train, test = kitti2015_lists(data.get("root"))
            read, mode, crop = read_kitti_disparity, "bottom_right", KITTI_EVAL_CROP
        train, val = hold_out(train, float(data.get("val_fraction", 0.1)))
        train, val, test = (
            cap(a, sizes[k]) for a, k in ((train, "train"), (val, "val"), (test, "test"))
        )
        return (
            FileStereo(train, read, "random", self.input_size),
            FileStereo(val, read, mode, crop),
            FileStereo(test, read, mode, crop),
        )


def cap(samples: list, n: int | None) -> list:
    """A seeded (seed 0) subset of ``n`` samples in their listed order (all when n is None)."""
    if n is None or n >= len(samples):
        return samples
    keep = sorted(np.random.default_rng(0).permutation(len(samples))[:n].tolist())
    return [samples[i] for i in keep]
