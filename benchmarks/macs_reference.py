"""Does the MACs counter reproduce the reference table of docs/architecture.md? Counted vs reference, per row.

Every row the project's tasks build: CIFAR ResNet-20/56 with option A and B shortcuts (the
classification task's builder), torchvision ResNet-18/50, AlexNet and VGG-16 at 224 (the ImageNet
task's builder; AlexNet's and VGG-16's references are torchvision's weights metadata, ``_ops`` in
G MACs to the digits torchvision prints and ``num_params``),
DeepLabV3-ResNet50 + aux head at 520×520, 21 classes (torchvision's builder, ``weights=None``),
and PSMNet at 256×512, maxdisp 192 (the stereo task's builder: its row appears when
``tasks.stereo`` imports, else it is marked "not built yet"). The segmentation task's own model
(segmentation-models-pytorch, no aux head) is counted against torchvision's DeepLabV3-R50 without
its aux head — not a §4 row: 168,731,205,888 MACs, 39,638,869 params.

"off" is counted − reference where the table states an exact figure, and 0 when the count rounds
to a rounded reference ("40.55 M"). The counter is ``prunebench.surgery.measure.count_macs``, which *is*
``FlopCounterMode`` (aten-level FLOPs ÷ 2); the cross-check is an independent count by forward
hooks on every conv (2D/3D, transposed per input voxel) and linear layer, from their shapes.
Where the two differ the row says why (an aten matmul outside conv/linear modules, which the
convention does not count, would show up here).

The timm families the ``imagenet_timm`` task covers (``tasks.classification.timm_models.COVERED``)
are counted at 224×224 too (rows ``timm_<model>_224``): no published reference here, so "off" is
our counter against the independent hook count, which must be 0. For a ViT the hooks add each
attention layer's two products (q·kᵀ and attn·v, N²·C MACs each for N tokens of width C), which
``FlopCounterMode`` counts in ``scaled_dot_product_attention``.

Also prints each row's params under the table's convention and the process's peak RSS.

    python benchmarks/macs_reference.py [--skip-deeplab]
"""

from __future__ import annotations

import argparse
import math
import resource

import torch
import torchvision
from _common import optional_task, task_from_conf, write_json
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunebench.surgery.measure import count_macs, count_params
from tasks.classification.timm_models import COVERED as TIMM_COVERED

# row → (reference MACs, MACs unit it is rounded to (1: exact), reference params, params unit,
#        params convention)
REFERENCE = {
    "cifar_resnet20_A": (40.55e6, 1e4, 269_722, 1, "all"),
    "cifar_resnet56_A": (125_485_696, 1, 0.853e6, 1e3, "all"),
    "cifar_resnet20_B": (40_813_184, 1, 270_896, 1, "conv+fc weights"),
    "cifar_resnet56_B": (125_747_840, 1, 851_504, 1, "conv+fc weights"),
    "resnet18_224": (1_814_073_344, 1, 11_689_512, 1, "all"),
    "resnet50_224": (4_089_184_256, 1, 25_557_032, 1, "all"),
    "alexnet_224": (0.714e9, 1e6, 61_100_840, 1, "all"),  # torchvision's _ops 0.714
    "vgg16_224": (15.47e9, 1e7, 138_357_544, 1, "all"),  # torchvision's _ops 15.47
    "deeplabv3_resnet50_aux_520": (178_721_945_088, 1, 42_004_074, 1, "all"),
    "psmnet_256x512_d192": (184.7e9, 1e8, 5.22e6, 1e4, "all"),
    # Not in §4: the segmentation task's own (smp) DeepLabV3-R50, OS 8, 21 classes, no aux head,
    # against torchvision's builder without its aux head (our count of it; the two agree at 520²,
    # tests/test_segmentation.py) — smp places the dilation differently, not the MACs.
    "deeplabv3_resnet50_520_smp": (168_731_205_888, 1, 39_638_869, 1, "all"),
}


def hook_macs(model: nn.Module, args: tuple) -> int:
    """MACs of conv and linear modules from their shapes, by forward hooks (one pass, batch of
    ``args``'s first tensor divided out): conv = output elements × C_in/groups × kernel volume;
    transposed conv = *input* elements × C_out/groups × kernel volume; linear = output elements
    × in_features."""
    total = 0

    def hook(m: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if _is_attention(m):  # (B, N, C) tokens: q·kᵀ and attn·v, N·N·C MACs each
            b, n, c = inputs[0].shape
            total += 2 * b * n * n * c
        elif isinstance(m, nn.Linear):
            total += output.numel() * m.in_features
        elif isinstance(m, nn.modules.conv._ConvTransposeNd):
            kvol = math.prod(m.kernel_size)
            total += inputs[0].numel() * (m.out_channels // m.groups) * kvol
        else:
            kvol = math.prod(m.kernel_size)
            total += output.numel() * (m.in_channels // m.groups) * kvol

    kinds = (nn.Linear, nn.modules.conv._ConvNd)
    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, kinds) or _is_attention(m)
    ]
    try:
        with torch.no_grad():
            model.eval()(*args)
    finally:
        for h in handles:
            h.remove()
    batch = next(a for a in args if isinstance(a, torch.Tensor)).shape[0]
    return total // batch


def _is_attention(m: nn.Module) -> bool:
    """A timm multi-head self-attention layer (``qkv`` projection, ``num_heads``)."""
    return hasattr(m, "qkv") and hasattr(m, "num_heads")


def flop_counter_other_ops(model: nn.Module, args: tuple) -> dict[str, int]:
    """FlopCounterMode's FLOPs per aten op, for ops other than convolution and addmm/mm (the
    conv/linear ones): what a raw FLOP counter would add beyond the convention."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(*args)
    ops = counter.get_flop_counts().get("Global", {})
    conv_linear = ("convolution", "addmm", "mm")
    return {str(k): int(v) for k, v in ops.items() if not any(c in str(k) for c in conv_linear)}


def conv_fc_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d))


def _row_name(task, x: torch.Tensor, row: str | None, conf: str) -> str:
    """The reference row a task's model is (PSMNet at width 1, maxdisp 192, 256×512; DeepLabV3
    R50, OS 8, 21 classes at 520²), else its config name (counted only)."""
    size = tuple(x.shape[-2:])
    psmnet = (
        row == "psmnet_256x512_d192"
        and getattr(task, "maxdisp", None) == 192
        and getattr(task, "width", 1.0) == 1.0
        and size == (256, 512)
    )
    deeplab = (
        row == "deeplabv3_resnet50_520_smp"
        and (task.arch, task.encoder, task.output_stride) == ("deeplabv3", "resnet50", 8)
        and task.num_classes == 21
        and size == (520, 520)
    )
    return f"{row} [{conf}]" if psmnet or deeplab else conf


def _models(skip_deeplab: bool) -> tuple[list[tuple], list[dict]]:
    """(name, model, example args, params convention) to count, and rows not built."""
    out, missing = [], []
    for depth in (20, 56):
        task = task_from_conf(f"cifar10_resnet{depth}")
        for shortcut in ("A", "B"):
            task.shortcut = shortcut
            model = task.build_model()
            out.append((f"cifar_resnet{depth}_{shortcut}", model, (task.example_input(1),)))
    for arch in ("resnet18", "resnet50", "alexnet", "vgg16"):
        task = task_from_conf(f"imagenet_{arch}")
        out.append((f"{arch}_224", task.build_model(), (task.example_input(1),)))
    for name in TIMM_COVERED:
        task = task_from_conf("imagenet_timm", model=name, input_size=224, tier_input_size=None)
        out.append((f"timm_{name}_224", task.build_model(), (task.example_input(1),)))
    if skip_deeplab:
        missing.append({"row": "deeplabv3_resnet50_aux_520", "status": "skipped (--skip-deeplab)"})
    else:
        model = torchvision.models.segmentation.deeplabv3_resnet50(
            weights=None, weights_backbone=None, num_classes=21, aux_loss=True
        )
        out.append(("deeplabv3_resnet50_aux_520", model, (torch.zeros(1, 3, 520, 520),)))
    for module, row in (
        ("tasks.stereo", "psmnet_256x512_d192"),
        ("tasks.segmentation", "deeplabv3_resnet50_520_smp"),
    ):
        names, why = optional_task(module)
        if why:
            missing.append({"row": row, "status": why})
        for name in names:
            task = task_from_conf(name)
            x = task.example_input(1)
            args = x if isinstance(x, tuple) else (x,)
            out.append((_row_name(task, args[0], row, name), task.build_model(), args))
    return out, missing


def count_row(name: str, model: nn.Module, args: tuple) -> dict:
    counted = count_macs(model, args if len(args) > 1 else args[0]).total
    hooked = hook_macs(model, args)
    other = flop_counter_other_ops(model, args)
    row = {
        "row": name,
        "input": [list(a.shape) for a in args if isinstance(a, torch.Tensor)],
        "macs_counted": counted,
        "macs_hooks": hooked,
        "counter_minus_hooks": counted - hooked,
        "flop_counter_other_ops_flops": other,
    }
    ref = REFERENCE.get(name.split(" [")[0])
    if name.startswith("timm_"):
        row["status"] = "timm family: counter against the hook count"
        row["macs_off"] = counted - hooked
        row["params"] = count_params(model)
        return row
    if ref is None:
        row["status"] = "no reference in docs/architecture.md (counted only)"
        row["params"] = count_params(model)
        return row
    macs_ref, macs_unit, params_ref, params_unit, convention = ref
    params = conv_fc_weights(model) if convention == "conv+fc weights" else count_params(model)
    row.update(
        {
            "macs_reference": macs_ref,
            "macs_diff": counted - macs_ref,
            "macs_off": 0
            if round(counted / macs_unit) * macs_unit == macs_ref
            else counted - macs_ref,
            "params": params,
            "params_convention": convention,
            "params_reference": params_ref,
            "params_off": 0
            if round(params / params_unit) * params_unit == params_ref
            else params - params_ref,
        }
    )
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-deeplab", action="store_true", help="skip the 520×520 DeepLabV3 row")
    p.add_argument("--out", default="results/benchmarks/macs_reference.json")
    p.add_argument(
        "--real",
        action="store_true",
        help="count on real tensors (default: the meta device — shapes only, no arithmetic, the "
        "same counts in seconds instead of minutes of 170-G-MAC forward passes)",
    )
    args = p.parse_args()
    device = torch.device("cpu" if args.real else "meta")
    with device:
        models, missing = _models(args.skip_deeplab)
        rows = [count_row(name, model.to(device), a) for name, model, a in models]
    print(
        f"{'row':30}{'counted MACs':>18}{'reference':>18}{'off':>8}{'hooks−counter':>15}"
        f"{'params':>12}{'ref':>12}{'off':>6}"
    )
    for r in rows:
        ref, pref = r.get("macs_reference"), r.get("params_reference")
        print(
            f"{r['row']:30}{r['macs_counted']:>18,}{'' if ref is None else f'{ref:,.0f}':>18}"
            f"{r.get('macs_off', ''):>8}{-r['counter_minus_hooks']:>15,}{r['params']:>12,}"
            f"{'' if pref is None else f'{pref:,.0f}':>12}{r.get('params_off', ''):>6}"
        )
        if r["flop_counter_other_ops_flops"]:
            print(f"  FlopCounterMode also counts (FLOPs): {r['flop_counter_other_ops_flops']}")
    for m in missing:
        print(f"{m['row']:30}{m['status']}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MiB")
    write_json(
        args.out,
        {"skip_deeplab": args.skip_deeplab, "batch": 1, "device": str(device)},
        rows=rows,
        not_measured=missing,
        peak_rss_mib=peak,
    )


if __name__ == "__main__":
    main()
