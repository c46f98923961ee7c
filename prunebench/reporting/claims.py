"""The papers' claims (``results/claims.yaml``): schema, loading, and conversion to our MACs.

A claim's reduction is in the paper's own quantity and convention; :func:`macs_reduction`
converts it to the fraction of MACs removed in our convention (docs/architecture.md) and says how, or
says why it cannot (a params, time or data figure is not a MACs figure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from prunebench.errors import RecordError

QUANTITIES = ("macs", "flops", "speedup", "params", "processing_time", "data", "unspecified")
CONVENTIONS = ("flops_is_macs", "flops_is_2macs", "speedup_conv_macs", "none")
BOUNDS = ("=", ">", "<")
REQUIRED = (
    "task",
    "source",
    "verified",
    "metric",
    "baseline",
    "value",
    "delta",
    "reduction",
    "convention",
    "words",
)


def _check_claim(method: str, i: int, c: dict[str, Any]) -> None:
    where = f"claims.yaml: {method} claim {i}"
    missing = [k for k in REQUIRED if k not in c]
    if missing:
        raise RecordError(f"{where}: missing {missing}")
    if c["task"] is None and not c.get("model"):
        raise RecordError(
            f"{where}: task is null, so `model` must say which model the claim is about"
        )
    stand_in = c.get("stand_in")
    if stand_in is not None and (
        not isinstance(stand_in, dict)
        or not isinstance(stand_in.get("tasks"), list)
        or not stand_in.get("why")
    ):
        raise RecordError(f"{where}: stand_in needs `tasks` (a list) and `why`")
    if not isinstance(c.get("hparams", {}), dict):
        raise RecordError(f"{where}: hparams must map hyper-parameter names to values")
    if c["verified"] not in ("V", "U"):
        raise RecordError(f"{where}: verified={c['verified']!r}; choices: V, U")
    for k in ("baseline", "value", "delta"):
        if c[k] is not None and not isinstance(c[k], int | float):
            raise RecordError(f"{where}: {k}={c[k]!r} is not a number or null")
    red = c["reduction"]
    if not isinstance(red, dict) or red.get("quantity") not in QUANTITIES:
        raise RecordError(f"{where}: reduction.quantity must be one of {QUANTITIES}")
    if not isinstance(red.get("value"), int | float) or red.get("bound") not in BOUNDS:
        raise RecordError(f"{where}: reduction needs a numeric value and bound in {BOUNDS}")
    if c["convention"] not in CONVENTIONS:
        raise RecordError(f"{where}: convention={c['convention']!r}; choices: {CONVENTIONS}")


def validate_claims(data: dict[str, Any]) -> dict[str, Any]:
    """Check the whole file; raise :class:`RecordError` naming the first problem."""
    if (
        not isinstance(data, dict)
        or data.get("schema_version") != 1
        or not isinstance(data.get("methods"), dict)
    ):
        raise RecordError("claims.yaml: needs schema_version: 1 and a `methods` mapping")
    for method, entry in data["methods"].items():
        if not entry.get("paper"):
            raise RecordError(f"claims.yaml: {method} has no `paper`")
        claims = entry.get("claims")
        if claims == "none":
            if not entry.get("reason"):
                raise RecordError(f"claims.yaml: {method} says `claims: none` without a `reason`")
            continue
        if not isinstance(claims, list) or not claims:
            raise RecordError(f"claims.yaml: {method} needs a list of claims or `claims: none`")
        for i, c in enumerate(claims):
            _check_claim(method, i, c)
    return data


def load_claims(path: str | Path) -> dict[str, Any]:
    """Read and validate ``claims.yaml``."""
    return validate_claims(yaml.safe_load(Path(path).read_text()))


def claims_for(
    data: dict[str, Any], method: str, task: str, hparams: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The claims of ``method`` about ``task`` (none for controls or other tasks); with
    ``hparams``, only claims whose own ``hparams`` (e.g. TRP's scheme) agree with them."""
    entry = data["methods"].get(method, {})
    claims = entry.get("claims")
    if not isinstance(claims, list):
        return []
    return [
        c
        for c in claims
        if c["task"] == task
        and (hparams is None or all(hparams.get(k) == v for k, v in c.get("hparams", {}).items()))
    ]


def macs_reduction(claim: dict[str, Any]) -> tuple[float | None, str]:
    """The claim's reduction as a fraction of our MACs removed, and how it was converted."""
    red, conv = claim["reduction"], claim["convention"]
    q, v, bound = red["quantity"], float(red["value"]), red["bound"]
    b = "" if bound == "=" else bound
    if q == "macs":
        return v, f"{b}−{100 * v:.1f} % MACs as stated"
    if q == "flops" and conv in ("flops_is_macs", "flops_is_2macs"):
        rule = "FLOPs counted as MACs" if conv == "flops_is_macs" else "FLOPs counted as 2×MACs"
        return (
            v,
            f"{b}−{100 * v:.1f} % FLOPs ({rule}; a ratio is the same) → {b}−{100 * v:.1f} % MACs",
        )
    if q == "speedup" and conv == "speedup_conv_macs":
        r = 1 - 1 / v
        return r, f"{b}{v:g}× (MACs before/after) → 1 − 1/{v:g} = {b}−{100 * r:.1f} % MACs"
    return None, f"{q.replace('_', ' ')} {b}{100 * v:.1f} %: not a MACs figure"
