"""``LEADERBOARD.md``: per (task, data source, tier), the headline (paired differences against
budget-matched controls, ``prunebench.reporting.headline``), then every row with the papers' claims.
Same input → byte-identical output."""

from __future__ import annotations

import json
import statistics
from typing import Any

from prunebench.reporting.claims import claims_for, macs_reduction
from prunebench.reporting.coverage import coverage_section
from prunebench.reporting.headline import KINDS, cell, headline, summary_words
from prunebench.reporting.leaderboard import Row
from prunebench.reporting.matching import NOISE_RULE
from prunebench.reporting.report import metric_scale
from prunebench.reporting.verdict import claims_section

SPEEDUP_DENSE_TOLERANCE = 0.10  # a dense-vs-itself speed-up off 1 by more: the timing is noise
SPEEDUP_NOTE = (
    "Speed-up “—†”: not shown as a result: the records carry no spread of the timing "
    "(`latency.speedup_iqr`), a record flags it untrustworthy (`latency.trustworthy`), or the "
    "table's dense-vs-itself speed-up is off 1 by more than 10 % (timing noise on a loaded machine)."
)


def _pm(mean: float, std: float | None, scale: float = 100, digits: int = 2) -> str:
    s = "—" if std is None else f"{scale * std:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {s}"


def _claim_cell(claims: list[dict[str, Any]], achieved: float) -> str:
    if not claims:
        return "—"
    best = min(claims, key=lambda c: abs((macs_reduction(c)[0] or 2.0) - achieved))
    red, how = macs_reduction(best)
    delta = "" if best["delta"] is None else f"Δ {best['delta']:+.2f} pt {best['metric']}; "
    base = "" if best["baseline"] is None else f"{best['baseline']:.2f} → {best['value']:.2f}; "
    more = f" (+{len(claims) - 1} more below)" if len(claims) > 1 else ""
    return f"{base}{delta}{how} [{best['source']}, {best['verified']}]{more}"


def trusted_speedup(row: Row, rows: list[Row]) -> str:
    """The row's speed-up with its spread, or ``—†`` when it is not a trustworthy figure."""
    lats = [r["latency"] for r in row.records]
    if any(
        not lat or lat.get("speedup_iqr") is None or not lat.get("trustworthy", True)
        for lat in lats
    ):
        return "—†"
    for dense in (d for d in rows if not d.records[0]["plan_widths"]):
        own = [r["latency"]["speedup"] for r in dense.records if r["latency"]]
        if own and abs(statistics.fmean(own) - 1) > SPEEDUP_DENSE_TOLERANCE:
            return "—†"
    value = statistics.fmean(lat["speedup"] for lat in lats)
    q1 = statistics.fmean(lat["speedup_iqr"][0] for lat in lats)
    q3 = statistics.fmean(lat["speedup_iqr"][1] for lat in lats)
    return f"{value:.2f}× (IQR {q1:.2f}–{q3:.2f})"


def _macs_cell(row: Row) -> str:
    """Analytic MACs, and the realised ones where the slim model computes more (KCP's masked
    kernels stay in dense convs)."""
    analytic = statistics.fmean(row.values(lambda r: r["macs"]["compressed"]))
    realised = statistics.fmean(
        row.values(lambda r: r["macs"].get("realised", r["macs"]["compressed"]))
    )
    text = f"{analytic / 1e6:.2f} M"
    return text + (f" (realised {realised / 1e6:.2f} M)" if realised > 1.005 * analytic else "")


def training_cell(row: Row) -> str:
    """Post-baseline training in epochs of the split (and a from-scratch method's total)."""
    post, total = row.training()
    if post is None:
        return "—"
    split = row.records[0]["train_samples"]["split"]
    text = f"{post:.1f} ep ({round(post * split):,} samples)"
    return text + (f"; from scratch, {total:.1f} ep in all" if total is not None else "")


def _headline_lines(rows: list[Row], scale: float, unit: str) -> list[str]:
    heads = headline(rows)
    if not heads:
        return []
    kinds = [k for k in KINDS if any(k in h.paired for h in heads)]
    out = [
        "### Headline: each method against its budget-matched controls",
        "",
        "| MACs level | method | achieved −MACs | training after baseline | "
        + " | ".join(f"Δ vs matched {k} ({unit or 'abs'})" for k in kinds)
        + " | in words |",
        "|---" * (5 + len(kinds)) + "|",
    ]
    for h in heads:
        out.append(
            f"| −{h.level} % | {h.row.label(rows)} | {100 * h.row.summary()['achieved']:.1f} % | "
            f"{training_cell(h.row)} | "
            + " | ".join(cell(h.paired.get(k), scale) for k in kinds)
            + f" | {summary_words(h)} |"
        )
    return out + [
        "",
        "Δ: the method's metric minus its control's, seed by seed (same seed and baseline hash; "
        "the control at the method's achieved MACs ±1 pt with the same post-baseline training "
        "samples; scratch: the method's architecture from a fresh start, same total epochs), "
        f"then mean ± sample std (n). {NOISE_RULE} `python scripts/controls.py` runs the controls.",
        "",
    ]


def render_markdown(
    tables: dict[tuple[str, str, str], list[Row]],
    claims: dict[str, Any],
    problems: list[str],
    failed: list[dict[str, Any]] | None = None,
    source: str = "the run records under `results/records/`",
    grid_failed: list[dict[str, Any]] | None = None,
    gaps: dict[tuple[str, str, str, str], str] | None = None,
) -> str:
    """The whole ``LEADERBOARD.md`` text; ``failed`` records (only when asked) are listed apart,
    at the end, with the stage and reason. With ``grid_failed`` (every failed record, listed or
    not), a coverage matrix of the grid follows the tables, its empty cells with ``gaps``' reasons."""
    out = [
        "# prunebench leaderboard",
        "",
        f"Generated by `python scripts/leaderboard.py` from {source}; do not edit.",
        "Metric: mean ± sample std over seeds (n). Δ vs dense: each seed's metric minus its own "
        "dense baseline (same baseline hash), averaged. Training after baseline: training-split "
        "samples read after the shared baseline (compress + finetune), in epochs of the split. "
        "MACs/params: mean over seeds, % removed vs dense. Speed-up: measured CPU latency, dense / "
        "compressed, at the record's batch, with the interquartile range of the paired ratios. "
        "Paper claims are the papers' own numbers on their own baselines (see "
        "`results/claims.yaml`), converted to our MACs convention where they are MACs figures. "
        "Only each point's newest code version is shown (superseded records: `results/archive/`).",
        "",
    ]
    if problems:
        out += ["Records skipped as malformed:", "", *[f"- {p}" for p in problems], ""]
    for (task, data, tier), rows in tables.items():
        metric = rows[0].metric
        scale, unit = metric_scale(metric)
        direction = "" if rows[0].higher_is_better else " (lower is better)"
        out += [f"## {task} · data: {data} · tier: {tier}", ""]
        out += _headline_lines(rows, scale, unit)
        out += [
            "### All rows",
            "",
            f"| method | target −MACs | achieved −MACs | {metric}{direction} (n) | "
            f"Δ vs dense ({unit or 'abs'}) | training after baseline | MACs | params "
            "| speed-up | paper claim | flags |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            x = row.summary()
            target = "—" if row.target is None else f"{100 * row.target:.1f} %"
            removed = 100 * (1 - x["params"] / x["params_dense"])
            claim = _claim_cell(
                claims_for(claims, row.method, task, json.loads(row.hparams)), x["achieved"]
            )
            out.append(
                f"| {row.label(rows)} | {target} | {100 * x['achieved']:.1f} % | "
                f"{_pm(x['metric'], x['metric_std'], scale)} ({row.n}) | "
                f"{_pm(x['delta'], x['delta_std'], scale)} | {training_cell(row)} | "
                f"{_macs_cell(row)} | {x['params'] / 1e6:.3f} M "
                f"({'−' if removed >= 0 else '+'}{abs(removed):.1f} %) | "
                f"{trusted_speedup(row, rows)} | {claim} | {'; '.join(row.flags)} |"
            )
        out += ["", SPEEDUP_NOTE]
        listed = [
            (meth, c) for meth in sorted(claims["methods"]) for c in claims_for(claims, meth, task)
        ]
        if listed:
            out += ["", f"Paper claims for {task}:", ""]
            for meth, c in listed:
                out.append(
                    f"- **{meth}** — {c['words']} [{c['source']}, {c['verified']}]; "
                    f"{macs_reduction(c)[1]}"
                )
        out.append("")
    if not tables:
        out += ["No records matched.", ""]
    if grid_failed is not None and tables:
        out += coverage_section(tables, grid_failed, gaps)
    out += claims_section(claims, tables)
    if failed:
        out += [
            "## Failed runs",
            "",
            "Not in any table above; rerunning the point replaces the record.",
            "",
            "| task | data | tier | method | seed | point | reason |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in failed:
            reason = (r["failure_reason"] or "").replace("|", "\\|").replace("\n", " ")
            out.append(
                f"| {r['task']} | {r['data_source']} | {r['budget']} | {r['method']} | "
                f"{r['seed']} | {r['point_id']} | {reason} |"
            )
        out.append("")
    return "\n".join(out)
