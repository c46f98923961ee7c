"""Does bf16 compute this model's layers correctly on this CPU? A check of the kernels themselves.

bf16 autocast on a CPU runs each convolution and linear layer through oneDNN's bf16 kernels, and
some of them are wrong for some shapes: with torch 2.14.1 on an AMX CPU, the weight gradient of a
3×3×3 ``Conv3d`` whose input is 2 deep (PSMNet's hourglass bottom at the cpu tier) and of a 3×3
stride-2 ``Conv2d`` on a 1×1 input comes back as garbage (up to 1e37, or ×2–3 off), while forward
and input gradient are right. Training goes on with it and ends with non-finite weights.

So before a CPU run trains in bf16, :func:`bad_bf16_layers` runs every distinct convolution and
linear layer of the model once, as the model's own training batch calls it (same module
settings, same input shape), in fp32 and under bf16 autocast, and compares output, input
gradient and weight gradient. One bf16 layer's error against fp32 is about 0.003 of the
tensor's norm; a wrong kernel is off by 1 or more, so the threshold (:data:`TOLERANCE`, 0.05)
leaves a wide margin on both sides.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

import torch
from torch import nn

CHECK_BATCH = 2  # the batch the check runs at: the wrong kernels we found are wrong at 1 and 2
TOLERANCE = 0.05  # ‖bf16 − fp32‖ / ‖fp32‖ above which a layer's bf16 kernel counts as wrong
LAYERS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)


def _signature(m: nn.Module, shape: tuple[int, ...]) -> tuple:
    """What picks a kernel: the layer's class and settings and its input's shape."""
    settings = {k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training"}
    return (type(m).__name__, repr(sorted(settings.items())), shape)


def layer_calls(model: nn.Module, x: Any) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """(name, layer, input shape) for each distinct convolution/linear call of one forward of
    ``model`` on ``x`` in training mode (weights untouched, nothing recorded for autograd)."""
    seen: dict[tuple, tuple[str, nn.Module, tuple[int, ...]]] = {}
    names = {m: n for n, m in model.named_modules()}

    def hook(m: nn.Module, args: tuple) -> None:
        if args and torch.is_tensor(args[0]):
            shape = tuple(args[0].shape)
            seen.setdefault(_signature(m, shape), (names[m], m, shape))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, LAYERS)]
    was_training = model.training
    state = copy.deepcopy(model.state_dict())  # BN running statistics move in a train forward
    try:
        model.train()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.load_state_dict(state)
        model.train(was_training)
    return list(seen.values())


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def layer_error(layer: nn.Module, shape: tuple[int, ...], seed: int = 0) -> float:
    """The largest relative error of ``layer``'s bf16-autocast output, input gradient and
    weight gradient against fp32, on a seeded random input of ``shape`` and output gradient."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    runs = []
    for bf16 in (False, True):
        m = copy.deepcopy(layer).float()
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = m(xi)
        if not runs:
            dy = torch.randn(y.shape, generator=g)
        y.float().backward(dy)
        w = getattr(m, "weight", None)
        runs.append(
            [t for t in (y.detach(), xi.grad, None if w is None else w.grad) if t is not None]
        )
    return max(_rel(b, f) for b, f in zip(runs[1], runs[0], strict=True))


def bad_bf16_layers(model: nn.Module, x: Any) -> list[str]:
    """``"name (Class, input shape): error"`` for each layer of ``model`` whose CPU bf16 kernel
    disagrees with fp32 beyond :data:`TOLERANCE` on the calls a forward on ``x`` makes."""
    bad = []
    for name, layer, shape in layer_calls(model, x):
        err = layer_error(layer, shape)
        if not err <= TOLERANCE:
            bad.append(
                f"{name} ({type(layer).__name__}, input {list(shape)}: relative error {err:.3g} against fp32)"
            )
    return bad


@functools.lru_cache(maxsize=32)
def _refusal(task_json: str, source: str) -> str | None:
    from prunebench.running.pipeline import _instantiate  # the pipeline imports this module

    task = _instantiate("task", json.loads(task_json))
    with torch.random.fork_rng():  # the caller's random state is left as it was
        torch.manual_seed(0)
        model = task.build_model()
        x = task.training_input(CHECK_BATCH, source)
        bad = bad_bf16_layers(model, x)
    if not bad:
        return None
    more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
    return f"this CPU's bf16 kernel is wrong for {bad[0]}{more}"


def bf16_refusal(cfg: dict[str, Any]) -> str | None:
    """Why the run config ``cfg``'s model must not train in bf16 on this CPU (a layer whose bf16
    kernel disagrees with fp32, see :func:`bad_bf16_layers`), or None. Checked once per task
    config and data source in a process, on a fresh model at :data:`CHECK_BATCH`."""
    task_json = json.dumps(cfg["task"], sort_keys=True, default=str)
    return _refusal(task_json, str(cfg["data"].get("source", "embedded")))
