"""The README's "results at a glance": every headline row of every leaderboard table, one line
each, written between two markers by ``scripts/leaderboard.py --publish`` so the README's
figures come from the committed records, never from a hand edit."""

from __future__ import annotations

from prunebench.reporting.headline import KINDS, Paired, cell, headline
from prunebench.reporting.leaderboard import Row
from prunebench.reporting.markdown import training_cell
from prunebench.reporting.report import metric_scale

BEGIN = "<!-- glance:begin — written by `python scripts/leaderboard.py --publish`; do not edit -->"
END = "<!-- glance:end -->"


def _words(p: Paired | None, scale: float, hib: bool) -> str:
    """The headline's cell, then the verdict in one word."""
    if p is None:
        return "—"
    if not p.diffs:
        return "no control yet"
    return f"{cell(p, scale)}: {p.outcome(hib)}"


def _dense(rows: list[Row], scale: float, unit: str) -> str:
    dense = [r for r in rows if r.method == "dense"]
    if not dense:
        return "—"
    x = dense[0].summary()
    spread = "—" if x["metric_std"] is None else f"{scale * x['metric_std']:.2f}"
    return f"{scale * x['metric']:.2f} ± {spread}{' %' if unit == 'pt' else ''} (n={x['n']})"


def glance_lines(tables: dict[tuple[str, str, str], list[Row]]) -> list[str]:
    """The table: task, dense metric, then per headline row the paired Δ against each matched
    control with its verdict under the leaderboard's noise rule."""
    out = [
        "| task · data · tier | dense | −MACs | method | training after baseline | "
        + " | ".join(f"Δ vs matched {k}" for k in KINDS)
        + " |",
        "|---" * (5 + len(KINDS)) + "|",
    ]
    for (task, data, tier), rows in tables.items():
        heads = headline(rows)
        if not heads:
            continue
        scale, unit = metric_scale(rows[0].metric)
        metric = f"{rows[0].metric}{'' if rows[0].higher_is_better else ' (lower is better)'}"
        first = f"{task} · {data} · {tier}"
        dense = f"{metric} {_dense(rows, scale, unit)}"
        for h in heads:
            cells = [_words(h.paired.get(k), scale, rows[0].higher_is_better) for k in KINDS]
            out.append(
                f"| {first} | {dense} | −{h.level} % | {h.row.label(rows)} | {training_cell(h.row)} | "
                + " | ".join(cells)
                + " |"
            )
            first, dense = "″", "″"
    return out


def with_glance(readme: str, tables: dict[tuple[str, str, str], list[Row]]) -> str:
    """``readme`` with the text between the markers replaced by the current table; an error
    naming the markers when they are missing or out of order."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no '{BEGIN}' … '{END}' block to write the glance table into")
    body = "\n".join(glance_lines(tables))
    return readme[: start + len(BEGIN)] + "\n" + body + "\n" + readme[end:]
