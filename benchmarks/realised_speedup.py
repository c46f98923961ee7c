"""Does a method's MACs reduction become a CPU speed-up? Theoretical vs measured, per method.

For each method at −50 % MACs (``--reduction``) on CIFAR ResNet-56 (32×32) and torchvision
ResNet-50 (224×224): the theoretical speed-up (dense MACs / the plan's MACs, docs/architecture.md) and the
measured one (dense latency / slimmed latency, CPU, ``torch.set_num_threads(--threads)``, warm-up,
median of ``--repeats``; every model of one (network, batch) timed interleaved in one
``measure_latency_paired`` call, so they share the machine's state), and their ratio (the
fraction of the theoretical speed-up that is realised).

Plans are made **without training**: random-init weights with random BatchNorm statistics and
affine parameters (``_common.trained_like``), through each method's own ``compress`` on a
``CompressContext`` (no training function: KCP plans its steps without finetuning, SPP and TRP
decide from the weights they are given, LAPP freezes its thresholds at init and projects onto
the target). Only the structure matters for latency; the accuracy of these models is meaningless.

Granularity: magnitude, random, CaP and LAPP remove whole filters (dense kernels realise them);
TRP replaces convs by their low-rank pairs (two dense convs); KCP removes kernels and SPP columns
inside a conv, which no dense kernel skips — the slimmed KCP model keeps a masked dense conv, and
its row also shows the *realised* MACs (what slimming could remove: whole channels whose every
kernel died); SPP's slimmed conv is a gather + GEMM (``prunebench.surgery.columns``). Torch-Pruning's own
``MagnitudePruner`` (L1, same target by bisection on its ratio) is a peer row: it prunes every
conv it may, the residual stream included on ResNet-50 (on the option-A CIFAR ResNet its block
convs only, like ours). Two deployment levers are timed on the magnitude model against the dense
one treated the same way: ``channels_last`` (that memory format) and ``bnfold`` (every conv→BN
pair folded into the conv by torch.fx's ``fuse``, as an inference engine does; BN and the other
ops MACs do not count are a large share of a small net's time, and pruning does not shrink them).

ResNet-50 at batch 64 is timed at ``--r50-b64-size`` px (default 64: 1/12 of the MACs; the
MAC ratios are those at 224 up to the fc layer, but the small maps change the kernels' efficiency) with ``--r50-b64-repeats`` (default 5) —
on this shared CPU a 224-px batch of 64 takes tens of seconds per pass. CaP is planned on
ResNet-56 only (its statistics pass and greedy search on ResNet-50 take too long here); its plan
is a filter plan like magnitude's.

Memory (``--memory-nets``, default ResNet-56 only: every process re-plans its model): each timed
model's peak RSS during three forward passes at the largest batch, in its own process
(``--child``), beside the dense model's, and the whole process's peak.

    python benchmarks/realised_speedup.py [--nets resnet56 resnet50] [--batches 1 64]
        [--repeats 20] [--methods magnitude,random,cap,kcp,spp,trp,lapp,tp_magnitude]
"""

from __future__ import annotations

import argparse
import copy

import torch
from _common import (
    PhasePeak,
    optional_task,
    peak_rss,
    task_context,
    task_from_conf,
    trained_like,
    write_json,
)
from _peer import tp_magnitude
from torch import nn
from torch.fx.experimental.optimization import fuse
from torch.utils.data import DataLoader, TensorDataset

from methods.cap import CaP
from methods.kcp import KCP
from methods.lapp import LAPP
from methods.magnitude import Magnitude
from methods.random import Random
from methods.spp import SPP
from methods.trp import TRP
from prunebench.method import CompressContext
from prunebench.surgery.measure import count_macs, measure_latency_paired
from prunebench.surgery.slim import slim
from prunebench.surgery.target import solve

NETS = {"resnet56": "cifar10_resnet56", "resnet50": "imagenet_resnet50"}
GRANULARITY = {
    "magnitude": "filter",
    "magnitude_round8": "filter, widths rounded up to multiples of 8 (target.solve round_to=8)",
    "random": "filter",
    "cap": "filter",
    "lapp": "filter (+ bypasses)",
    "trp": "low-rank",
    "kcp": "kernel (not realisable by dense kernels)",
    "spp": "column (gather + GEMM)",
    "tp_magnitude": "filter (Torch-Pruning, residual stream too on ResNet-50)",
}
METHODS = list(GRANULARITY)
VARIANTS = ("channels_last", "bnfold")  # deployment levers timed on magnitude and dense alike


def _cap_data(model: nn.Module, x1: torch.Tensor, n: int = 64):
    """Random inputs labelled by the dense model itself (so pruning lowers the 'accuracy')."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *x1.shape[1:], generator=g)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)

    def evaluate(m: nn.Module) -> float:
        with torch.no_grad():
            return float((m.eval()(x).argmax(1) == y).float().mean())

    return loader, evaluate


def plan_and_slim(name: str, task, reduction: float) -> tuple[nn.Module, int]:
    """(slimmed model, the plan's MACs by the §4 convention) of one method on a fresh
    trained-like model of ``task``."""
    torch.manual_seed(0)
    model = trained_like(task.build_model())
    x1 = task.example_input(1)
    if name == "tp_magnitude":
        return tp_magnitude(model, x1, reduction)
    if name == "lapp":
        method = LAPP()
        prunable = method.prepare(model, task.prunable_layers(model))
        trained_like(model, seed=1)  # the bypasses' BNs too
        ctx = CompressContext.build(
            model, x1, prunable, task.protected_layers(model), reduction, compress_epochs=1
        )
        plan = method.hooks(ctx).freeze(model)
    else:
        kw = {}
        if name == "cap":
            loader, evaluate = _cap_data(model, x1)
            kw = {"calib_loader": lambda fraction: loader, "evaluate": evaluate}
        ctx = task_context(task, model, reduction, **kw)
        if name == "magnitude_round8":  # the solver's SIMD-width option, on magnitude's scores
            ctx.solve = lambda scores, allocation="global": solve(
                scores, ctx.mac_model, reduction, allocation, round_to=8
            )
        method = {
            "magnitude_round8": lambda: Magnitude("uniform"),
            "magnitude": lambda: Magnitude("uniform"),
            "random": lambda: Random("uniform"),
            "cap": lambda: CaP(search_steps=3, target_iters=4),
            "kcp": lambda: KCP(step_reduction=0.25),
            "spp": lambda: SPP(),
            "trp": lambda: TRP(scheme="channel", mode="macs_target"),
        }[name]()
        plan = method.compress(ctx)
    return slim(ctx.model, plan, x1, ctx.structure).eval(), ctx.mac_model.plan_macs(plan)


def as_variant(model: nn.Module, variant: str) -> nn.Module:
    """A copy of ``model`` as deployed with one lever: ``channels_last`` memory format, or
    ``bnfold`` (every conv→BN pair folded into the conv, torch.fx's ``fuse``: inference only,
    the same function up to rounding)."""
    model = copy.deepcopy(model).eval()
    if variant == "channels_last":
        return model.to(memory_format=torch.channels_last)
    return fuse(model)


def _hw(x1: torch.Tensor, size: int) -> tuple[int, int]:
    """The timed input's (h, w): the example's own when ``size`` is its width, else size²."""
    return tuple(x1.shape[-2:]) if size == x1.shape[-1] else (size, size)


def psmnet_overrides(args: argparse.Namespace) -> dict:
    """PSMNet at the paper's width, a smaller input and maxdisp; the SPP pools scaled with the
    1/4-resolution map (the paper's 64/32/16/8 at 256×512)."""
    h = args.psmnet_input[0]
    return {
        "input_size": list(args.psmnet_input),
        "maxdisp": args.psmnet_maxdisp,
        "spp_pools": [max(1, p * h // 256) for p in (64, 32, 16, 8)],
    }


def child(net: str, name: str, batch: int, size: int, args: argparse.Namespace) -> None:
    """One model's memory process: build it again (plans are deterministic; kernel-masked models
    cannot be pickled) and run three forward passes."""
    torch.set_num_threads(1)
    task = task_from_conf(NETS.get(net, net), **(psmnet_overrides(args) if net == "psmnet" else {}))
    if name.startswith("dense"):
        torch.manual_seed(0)
        model = trained_like(task.build_model())
    else:
        base = name
        for v in VARIANTS:
            base = base.removesuffix(f"_{v}")
        model = plan_and_slim(base, task, args.reduction)[0]
    for v in VARIANTS:
        if name.endswith(f"_{v}"):
            model = as_variant(model, v)
    x1 = task.example_input(1)
    x = torch.randn(batch, *x1.shape[1:-2], *_hw(x1, size))
    with torch.no_grad(), PhasePeak() as peak:
        for _ in range(3):
            model(x)
    peak.report()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reduction", type=float, default=0.5)
    p.add_argument("--r50-b64-size", type=int, default=64)
    p.add_argument("--r50-b64-repeats", type=int, default=5)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument(
        "--memory-nets",
        nargs="*",
        default=["resnet56"],
        help="nets whose peak RSS is measured (each model re-planned in its own process)",
    )
    p.add_argument(
        "--psmnet",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time PSMNet (paper channels) at --psmnet-input / --psmnet-maxdisp, batch 1",
    )
    p.add_argument("--psmnet-input", nargs=2, type=int, default=[128, 256], metavar=("H", "W"))
    p.add_argument("--psmnet-maxdisp", type=int, default=96)
    p.add_argument("--psmnet-repeats", type=int, default=10)
    p.add_argument("--out", default="results/benchmarks/realised_speedup.json")
    p.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        net, name, batch, size = args.child
        return child(net, name, int(batch), int(size), args)
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    if set(methods) - set(METHODS):
        raise SystemExit(f"--methods {sorted(set(methods) - set(METHODS))}; choices: {METHODS}")
    rows, failures, memory, timings = [], [], [], []
    stereo, why = optional_task("tasks.stereo")
    if why:
        failures.append({"net": "psmnet", "method": "all", "why": why})
    if stereo and args.psmnet:  # the paper's PSMNet (full width) at a smaller input, batch 1
        NETS["psmnet"] = "stereo_psmnet_sceneflow"
        args.nets.append("psmnet")
    for net in args.nets:
        task = task_from_conf(NETS[net], **(psmnet_overrides(args) if net == "psmnet" else {}))
        torch.manual_seed(0)
        dense = trained_like(task.build_model())
        x1 = task.example_input(1)
        dense_macs = count_macs(dense, x1).total
        models = {"dense": dense}
        info = {}
        for name in methods:
            if net == "psmnet" and name in ("cap", "tp_magnitude"):
                why = {
                    "cap": "its benchmark calibration labels are classification argmaxes",
                    "tp_magnitude": "its ignored layers are named for the ResNets",
                }[name]
                failures.append({"net": net, "method": name, "why": f"not planned: {why}"})
                continue
            if name == "cap" and net == "resnet50":
                failures.append(
                    {
                        "net": net,
                        "method": name,
                        "why": "not planned on ResNet-50 "
                        "(statistics pass + greedy search too slow on this CPU)",
                    }
                )
                continue
            try:
                slimmed, plan_macs = plan_and_slim(name, task, args.reduction)
            except Exception as exc:  # a method that cannot plan this net: say so, go on
                failures.append({"net": net, "method": name, "why": f"{type(exc).__name__}: {exc}"})
                print(f"{net} {name}: no plan ({type(exc).__name__}: {exc})")
                continue
            models[name] = slimmed
            info[name] = {"plan_macs": plan_macs, "realised_macs": count_macs(slimmed, x1).total}
            print(f"{net} {name}: planned, MACs −{100 * (1 - plan_macs / dense_macs):.1f} %")
        if "magnitude" in models:  # deployment levers, on the magnitude model and dense alike
            for variant in VARIANTS:
                if variant == "channels_last" and net == "psmnet":  # it mixes 2D and 3D convs
                    continue
                try:
                    for name in ("dense", "magnitude"):
                        models[f"{name}_{variant}"] = as_variant(models[name], variant)
                except Exception as exc:  # e.g. a model torch.fx cannot trace
                    why = f"{type(exc).__name__}: {exc}"
                    failures.append({"net": net, "method": f"magnitude_{variant}", "why": why})
                    models.pop(f"dense_{variant}", None)
                    continue
                info[f"magnitude_{variant}"] = info["magnitude"]
        size = x1.shape[-1]
        for batch in args.batches if net in ("resnet56", "resnet50") else [1]:
            s, reps = size, args.psmnet_repeats if net == "psmnet" else args.repeats
            if net == "resnet50" and batch > 8:
                s, reps = args.r50_b64_size, args.r50_b64_repeats
            x = torch.randn(
                batch, *x1.shape[1:-2], *_hw(x1, s), generator=torch.Generator().manual_seed(1)
            )
            t = measure_latency_paired(models, x, reps, args.warmup)
            timings.append({"net": net, "batch": batch, "size": s, "latency": t})
            for name, i in info.items():
                variant = next((v for v in VARIANTS if name.endswith(f"_{v}")), None)
                base = f"dense_{variant}" if variant else "dense"
                theory = dense_macs / i["plan_macs"]
                measured = t[base]["median_ms"] / t[name]["median_ms"]
                rows.append(
                    {
                        "net": net,
                        "method": name,
                        "granularity": GRANULARITY.get(name.removesuffix(f"_{variant}"), ""),
                        "batch": batch,
                        "input": s,
                        "repeats": reps,
                        "macs_reduction": 1 - i["plan_macs"] / dense_macs,
                        "speedup_theoretical": theory,
                        "speedup_if_realised_macs": dense_macs / i["realised_macs"],
                        "dense_median_ms": t[base]["median_ms"],
                        "median_ms": t[name]["median_ms"],
                        "speedup_measured": measured,
                        "realised_fraction": measured / theory,
                    }
                )
        if net not in args.memory_nets:
            continue
        # Memory at the largest batch, one process per model.
        batch = max(args.batches)
        s = args.r50_b64_size if net == "resnet50" and batch > 8 else size
        for name in models:
            argv = [__file__, "--child", net, name, str(batch), str(s)]
            peak = peak_rss([*argv, "--reduction", str(args.reduction)])
            memory.append({"net": net, "model": name, "batch": batch, "input": s, **peak})
    print(
        f"CPU, {args.threads} thread(s); theoretical = dense MACs / plan MACs; "
        "measured = dense median / model median (interleaved)"
    )
    print(
        f"{'net':9}{'method':24}{'batch':>6}{'px':>5}{'MACs −%':>8}{'theory':>8}"
        f"{'measured':>9}{'ratio':>7}{'if realised':>12}  granularity"
    )
    for r in rows:
        print(
            f"{r['net']:9}{r['method']:24}{r['batch']:>6}{r['input']:>5}"
            f"{100 * r['macs_reduction']:>8.1f}{r['speedup_theoretical']:>7.2f}×"
            f"{r['speedup_measured']:>8.2f}×{r['realised_fraction']:>7.2f}"
            f"{r['speedup_if_realised_macs']:>11.2f}×  {r['granularity']}"
        )
    for f in failures:
        print(f"{f['net']:9}{f['method']:24} not measured: {f['why']}")
    dense_peak = {m["net"]: m["phase_mib"] for m in memory if m["model"] == "dense"}
    for m in memory:
        m["phase_ratio_to_dense"] = m["phase_mib"] / dense_peak[m["net"]]
        print(
            f"peak RSS {m['net']} {m['model']:24} b{m['batch']} {m['input']}px: forward passes "
            f"{m['phase_mib']:.0f} MiB (×{m['phase_ratio_to_dense']:.2f} dense), "
            f"process {m['process_mib']:.0f} MiB"
        )
    settings = {
        k: getattr(args, k)
        for k in ("nets", "batches", "repeats", "warmup", "threads", "reduction", "methods")
    } | {
        "r50_b64_size": args.r50_b64_size,
        "r50_b64_repeats": args.r50_b64_repeats,
        "memory_nets": args.memory_nets,
        "psmnet": {
            "input": args.psmnet_input,
            "maxdisp": args.psmnet_maxdisp,
            "repeats": args.psmnet_repeats,
        }
        if args.psmnet
        else None,
        "weights": "random init with random BN statistics (structure only; no training)",
    }
    write_json(args.out, settings, rows=rows, not_measured=failures, memory=memory, timings=timings)


if __name__ == "__main__":
    main()
