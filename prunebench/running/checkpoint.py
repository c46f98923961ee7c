"""Compressed checkpoints that load back into the exact slimmed ``nn.Module``.

A checkpoint holds what rebuilds the architecture — the task's config (``_target_`` and its
arguments) and the plan — plus the slimmed model's weights, masks baked in. Loading builds the
dense model from the task, slims it with the plan through the same core code that made it
(``prunebench.surgery.slim``: filter removal, kernel masks, column convs, low-rank factors), then loads
the weights strictly. No training config is needed, and a state dict never has to match an
architecture by hand.

    model = prunebench.load("runs/checkpoints/cifar10_resnet56/<point>.pt")
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.plan import Plan
from prunebench.reporting.records import write_atomic
from prunebench.surgery.bypass import add_bypasses, bypasses
from prunebench.surgery.masks import remove_masks
from prunebench.surgery.slim import slim
from prunebench.surgery.structure import Structure

FORMAT = "prunebench.compressed"
VERSION = 1  # the version this code writes and the newest it reads


class CheckpointError(PrunebenchError):
    """An unreadable, foreign or too-new checkpoint."""


def save_compressed(
    path: str | Path,
    task_cfg: dict[str, Any],
    plan: Plan,
    model: nn.Module,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (the slimmed model; masks are baked into a copy) atomically to ``path``.

    Args:
        task_cfg: the task's config as composed (``_target_`` and arguments).
        plan: the plan the model was slimmed with.
        meta: anything worth keeping beside it (method, hyper-parameters, record id, MACs).
    """
    baked = remove_masks(copy.deepcopy(model), bake=True)
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "task": task_cfg,
        "plan": plan.to_dict(),
        "bypasses": bypasses(baked),
        "state_dict": baked.state_dict(),
        "meta": dict(meta or {}),
    }
    buf = io.BytesIO()
    torch.save(blob, buf)
    path = Path(path)
    write_atomic(path, buf.getvalue())
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, checked for format and version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — any unreadable file gets the same clear error
        raise CheckpointError(
            f"checkpoint {path} is not readable ({type(exc).__name__}); was it cut short?"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a prunebench compressed checkpoint (format {FORMAT!r} expected)"
        )
    version = blob.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"{path} is checkpoint format version {version}; this prunebench reads versions "
            f"1–{VERSION}: it needs a newer prunebench"
        )
    return blob


def build_slimmed(
    task_cfg: dict[str, Any], plan: Plan, bypassed: dict[str, str] | None = None
) -> tuple[nn.Module, Any]:
    """The task's dense model, with the run's bypasses (``{layer: kind}``) added, slimmed by
    ``plan`` (fresh weights), and the task."""
    task = instantiate(task_cfg, _convert_="all")
    dense = task.build_model().eval()
    example = task.example_input()
    prunable = task.prunable_layers(dense)
    for kind in sorted(set((bypassed or {}).values())):
        where = add_bypasses(dense, [n for n, k in bypassed.items() if k == kind], kind)
        prunable = [where.get(n, n) for n in prunable]
    structure = Structure(dense, example, prunable, task.protected_layers(dense))
    return remove_masks(slim(dense, plan, example, structure), bake=True), task


def load(path: str | Path) -> nn.Module:
    """Rebuild the slimmed model saved at ``path``, in eval mode."""
    return load_with_task(path)[0]


def load_with_task(path: str | Path) -> tuple[nn.Module, Any]:
    """The slimmed model saved at ``path`` (eval mode) and its task (example inputs, metrics)."""
    blob = read_checkpoint(path)
    model, task = build_slimmed(blob["task"], Plan.from_dict(blob["plan"]), blob.get("bypasses"))
    state, own = blob["state_dict"], model.state_dict()
    for key in state:  # a compensated layer that gained a bias (CaP on a bias-free conv)
        owner, _, leaf = key.rpartition(".")
        if leaf != "bias" or key in own:
            continue
        try:
            module = model.get_submodule(owner)
        except AttributeError:
            continue  # not this architecture: load_state_dict below says so
        if getattr(module, "bias", False) is None:
            module.bias = nn.Parameter(torch.zeros_like(state[key]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: the weights do not fit the architecture rebuilt from its plan "
            f"({str(exc).splitlines()[0]})"
        ) from None
    return model.eval(), task
