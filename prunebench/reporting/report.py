"""What a run prints at the end, and the per-layer rows logged to W&B."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from prunebench.surgery.measure import MacCount


def _width(module: nn.Module | None) -> int:
    """Output channels; for a factorised conv (two convs in a Sequential), the last one's."""
    if isinstance(module, nn.Sequential):
        module = module[-1]
    module = getattr(module, "conv", module)  # a bypassed conv (prunebench.surgery.bypass)
    return int(module.weight.shape[0]) if module is not None and hasattr(module, "weight") else 0


def layer_rows(
    dense: nn.Module, compressed: nn.Module, macs_dense: MacCount, macs_comp: MacCount
) -> list[dict[str, Any]]:
    """Per conv/linear layer: output channels and MACs before and after compression."""
    after = dict(compressed.named_modules())
    rows = []
    for name, module in dense.named_modules():
        if name not in macs_dense.per_module or not hasattr(module, "weight"):
            continue
        rows.append(
            {
                "layer": name,
                "channels_before": _width(module),
                "channels_after": _width(after.get(name)),
                "macs_before": macs_dense.per_module[name],
                "macs_after": sum(
                    v
                    for k, v in macs_comp.per_module.items()
                    if k == name or k.startswith(name + ".")
                ),  # factorised: its parts
            }
        )
    return rows


FRACTION_METRICS = ("top1", "top5", "acc", "miou")


def metric_scale(key: str) -> tuple[float, str]:
    """(display scale, unit of a difference): fractions show as % with Δ in points; other
    metrics (stereo EPE in px, …) as they are."""
    return (100.0, "pt") if key.endswith(FRACTION_METRICS) else (1.0, "")


def _fmt_metric(key: str, v: float | None) -> str:
    return (
        "—" if v is None else f"{100 * v:.2f} %" if key.endswith(FRACTION_METRICS) else f"{v:.4f}"
    )


def _target(record: dict[str, Any]) -> str:
    t = record["target_macs_reduction"]
    return "no MACs target" if t is None else f"target −{100 * t:.1f} %"


def print_summary(record: dict[str, Any], path: Path) -> None:
    """A short end-of-run table in the terminal."""
    key = record["metric"]
    base = record["baseline"]["test"].get(key)
    comp = record["test"].get(key)
    macs, params, lat = record["macs"], record["params"], record["latency"]
    scale, unit = metric_scale(key)
    unit = f" {unit}" if unit else ""
    delta = "" if base is None or comp is None else f"  (Δ {scale * (comp - base):+.2f}{unit})"
    lines = [
        f"prunebench · {record['task']} × {record['method']} · seed {record['seed']} · "
        f"budget {record['budget']} · data {record['data_source']}",
        f"{'':22}{'dense':>14}{'compressed':>14}",
        f"{key:22}{_fmt_metric(key, base):>14}{_fmt_metric(key, comp):>14}{delta}",
        f"{'MACs':22}{macs['dense'] / 1e6:>13.2f}M{macs['compressed'] / 1e6:>13.2f}M"
        f"  (−{100 * record['achieved_macs_reduction']:.1f} %, {_target(record)})",
        f"{'params':22}{params['dense'] / 1e6:>13.3f}M{params['compressed'] / 1e6:>13.3f}M",
    ]
    if macs.get("realised", macs["compressed"]) != macs["compressed"]:
        lines.insert(
            4,
            f"{'MACs realised (slim)':22}{'':>14}{macs['realised'] / 1e6:>13.2f}M"
            "  (masked kernels still computed)",
        )
    if lat:
        lines.append(
            f"{'latency b' + str(lat['batch']) + ' ' + lat['device'] + ' (ms)':22}"
            f"{lat['dense_median_ms']:>14.2f}{lat['compressed_median_ms']:>14.2f}"
            f"  (×{lat['speedup']:.2f}{_spread(lat)})"
        )
    secs = ", ".join(f"{k} {v:.0f}s" for k, v in record["stage_seconds"].items())
    lines += [
        f"baseline: {record['baseline']['source']} ({record['baseline']['hash']}) · {secs}",
        f"record: {path}",
    ]
    if record.get("wandb"):
        lines.append(f"wandb ({record['wandb']['mode']}): {record['wandb']['dir']}")
    print("\n".join(lines))


def _spread(lat: dict) -> str:
    """The speed-up's spread and, when it is noise, why (records before these fields: "")."""
    if "speedup_iqr" not in lat:
        return ""
    q1, q3 = lat["speedup_iqr"]
    flag = "" if lat.get("trustworthy") else f"; not trustworthy: {lat.get('untrusted_reason')}"
    return f", IQR {q1:.2f}–{q3:.2f}{flag}"
