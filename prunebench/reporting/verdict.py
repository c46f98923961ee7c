"""A verdict beside every paper claim: what our records say about it, in words.

For each claim in ``results/claims.yaml`` the leaderboard looks for the claimed method's rows on
the claim's task (and hyper-parameters, e.g. TRP's scheme) at the claim's MACs reduction
(converted by :func:`prunebench.reporting.claims.macs_reduction`; a row within
``MACS_TOLERANCE`` of it, or past it for a ">" claim). Only ``paper``-tier rows on ``disk`` data
can reproduce a claim; a row on embedded data or a smaller tier is a *proxy* and is labelled as
one, whatever its number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from prunebench.reporting.claims import macs_reduction
from prunebench.reporting.leaderboard import Row
from prunebench.reporting.report import metric_scale

DELTA_TOLERANCE = 0.5  # points: our Δ vs dense may fall this far short of the claimed Δ
MACS_TOLERANCE = 0.01  # fraction of dense MACs: a row this close to the claim's reduction counts
VERDICT_RULE = (
    f"Verdict rule: a claim is *reproduced* when a `paper`-tier row on `disk` data reaches the "
    f"claim's MACs reduction (within {100 * MACS_TOLERANCE:.0f} pt, or beyond it for a “>” "
    f"claim) and its Δ vs dense (mean over seeds) is no more than {DELTA_TOLERANCE} pt below "
    "the claimed Δ; *not reproduced* says by how much it falls short. Rows on embedded data or "
    "at the `cpu`/`smoke` tier are proxies: shown for orientation, never a reproduction. The "
    "claimed Δ is in the paper's metric on the paper's baseline; ours is in the task's metric "
    "(a claim in another metric, e.g. top-5 error, is compared only in words)."
)


@dataclass(frozen=True)
class Verdict:
    method: str
    claim: dict[str, Any]
    target: float | None  # the claim's reduction in our MACs convention (None: not a MACs figure)
    evidence: list[tuple[tuple[str, str, str], Row]]  # (task, data, tier) → the nearest row
    words: str


def _at_claim(row: Row, target: float | None, bound: str) -> bool:
    achieved = row.summary()["achieved"]
    if target is None:
        return False
    if bound == ">":
        return achieved >= target - MACS_TOLERANCE
    return abs(achieved - target) <= MACS_TOLERANCE


def _hparams_match(row: Row, claim: dict[str, Any]) -> bool:
    own = json.loads(row.hparams)
    return all(own.get(k) == v for k, v in claim.get("hparams", {}).items())


METRIC_WORDS = {"top1": "top-1", "top5": "top-5", "miou": "miou", "epe": "epe"}


def _same_metric(claim: dict[str, Any], row: Row) -> bool:
    """Whether the claim's metric is the row's (e.g. both top-1 accuracy, not top-5 error)."""
    name = row.metric.split("/")[-1].lower()
    return claim["metric"].lower().startswith(METRIC_WORDS.get(name, name))


def claim_target(claim: dict[str, Any]) -> float | None:
    """The claim's reduction in our MACs convention; an ``unspecified`` quantity (LAPP's
    "compressed to 40.3 %") is read as MACs, the reading the leaderboard's rows use."""
    if claim["reduction"]["quantity"] == "unspecified":
        return float(claim["reduction"]["value"])
    return macs_reduction(claim)[0]


def judge(
    method: str, claim: dict[str, Any], tables: dict[tuple[str, str, str], list[Row]]
) -> Verdict:
    """The verdict on one claim from the leaderboard's tables."""
    target = claim_target(claim)
    bound = claim["reduction"]["bound"]
    evidence = []
    for key, rows in tables.items():
        if key[0] != claim["task"]:
            continue
        mine = [r for r in rows if r.method == method and _hparams_match(r, claim)]
        near = [r for r in mine if _at_claim(r, target, bound)]
        if near:
            evidence.append((key, min(near, key=lambda r: abs(r.summary()["achieved"] - target))))
    if claim["task"] is None:
        return Verdict(method, claim, target, [], "no task here builds this model")
    if target is None:
        return Verdict(method, claim, target, evidence, "not a MACs figure: not compared")
    real = [(k, r) for k, r in evidence if k[1] == "disk" and k[2] == "paper"]
    if not real:
        proxy = " (proxy rows only)" if evidence else ""
        return Verdict(method, claim, target, evidence, f"not run at the paper tier{proxy}")
    key, row = real[0]
    x = row.summary()
    ours = metric_scale(row.metric)[0] * x["delta"]
    if claim["delta"] is None or not _same_metric(claim, row):
        return Verdict(
            method,
            claim,
            target,
            evidence,
            "run at the paper tier; the claim has no Δ in our metric",
        )
    short = claim["delta"] - ours if row.higher_is_better else ours - claim["delta"]
    if short <= DELTA_TOLERANCE:
        return Verdict(method, claim, target, evidence, "reproduced")
    return Verdict(method, claim, target, evidence, f"not reproduced ({short:.2f} pt short)")


def claims_section(
    claims: dict[str, Any], tables: dict[tuple[str, str, str], list[Row]]
) -> list[str]:
    """The leaderboard's closing section: one line per claim with its verdict and evidence."""
    out = [
        "## Paper claims and verdicts",
        "",
        "| method | task | claim | source | claimed Δ | our MACs target | our rows (Δ vs dense, n) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in sorted(claims["methods"]):
        listed = claims["methods"][method].get("claims")
        if not isinstance(listed, list):
            continue
        for claim in listed:
            v = judge(method, claim, tables)
            delta = "—" if claim["delta"] is None else f"{claim['delta']:+.2f} pt {claim['metric']}"
            target = "—" if v.target is None else f"−{100 * v.target:.1f} %"
            if claim["reduction"]["quantity"] == "unspecified":
                target += " (read as MACs; the paper does not say)"
            rows = "; ".join(_evidence(key, row) for key, row in v.evidence) or "—"
            words = claim["words"].replace("|", "\\|")
            task = claim["task"] or f"— ({claim['model']}{_stand_in(claim)})"
            out.append(
                f"| {method} | {task} | {words} | {claim['source']} [{claim['verified']}] | {delta} "
                f"| {target} | {rows} | {v.words} |"
            )
    return [*out, "", VERDICT_RULE, ""]


def _stand_in(claim: dict[str, Any]) -> str:
    s = claim.get("stand_in")
    return f"; stand-in here: {', '.join(s['tasks'])}: {s['why']}" if s else ""


def _evidence(key: tuple[str, str, str], row: Row) -> str:
    x = row.summary()
    scale, unit = metric_scale(row.metric)
    std = "—" if x["delta_std"] is None else f"{scale * x['delta_std']:.2f}"
    label = "" if key[1:] == ("disk", "paper") else " — proxy"
    return (
        f"{key[2]}/{key[1]}: {scale * x['delta']:+.2f} ± {std} {unit or row.metric} at "
        f"−{100 * x['achieved']:.1f} % ({row.n}){label}"
    )
