"""Rank the run records: the leaderboard as markdown (stdout, ``--out``) or, with ``--publish``,
the published ``results/LEADERBOARD.md``, ``results/plots/<task>.png`` and the README's
results-at-a-glance block (between its ``glance`` markers).

python scripts/leaderboard.py [--results DIR] [--task T] [--tier cpu] [--data embedded]
    [--out FILE.md] [--plots DIR] [--publish] [--archive] [--one-version TASK] [--include-smoke]
    [--failed] [--wandb]

By default it reads the published records (``results/records``) and prints; ``--results`` reads
a user folder instead (``paths.results_dir`` of your runs). A filtered view never overwrites the
published tables: ``--publish`` takes no filter. Smoke-tier and failed records stay out of the
tables unless asked for (``--include-smoke``, ``--failed``, or ``--tier smoke``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from prunebench.errors import RecordError
from prunebench.reporting.claims import load_claims
from prunebench.reporting.coverage import cell_name, load_gaps, stale_gaps
from prunebench.reporting.glance import with_glance
from prunebench.reporting.headline import as_dict, headline
from prunebench.reporting.leaderboard import (
    ARCHIVE,
    aggregate,
    failed_runs,
    load_records,
    older_versions,
    split_superseded,
)
from prunebench.reporting.markdown import render_markdown
from prunebench.reporting.matching import baseline_conflicts
from prunebench.reporting.plots import method_styles, plot_task
from prunebench.reporting.records import write_atomic

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "results"
CONF = ROOT / "conf"
README = ROOT / "README.md"


def log_wandb(tables, runs_dir: str) -> str:
    """Log every table (and its headline) as W&B Tables in one offline run; returns its folder."""
    import wandb

    run = wandb.init(
        project="prunebench",
        job_type="leaderboard",
        mode="offline",
        dir=runs_dir,
        settings=wandb.Settings(console="off", x_disable_stats=True),
    )
    for (task, data, tier), rows in tables.items():
        summaries = [
            {
                "method": r.label(),
                "target": r.target,
                "finetune_epochs": r.finetune_epochs,
                **r.summary(),
                "flags": "; ".join(r.flags),
            }
            for r in rows
        ]
        cols = list(summaries[0])
        table = wandb.Table(columns=cols, data=[[s[c] for c in cols] for s in summaries])
        run.log({f"leaderboard/{task}/{data}/{tier}": table})
        heads = [as_dict(h) for h in headline(rows)]
        if heads:
            cols = sorted({c for h in heads for c in h})
            table = wandb.Table(columns=cols, data=[[h.get(c) for c in cols] for h in heads])
            run.log({f"headline/{task}/{data}/{tier}": table})
    folder = str(Path(run.dir).parent)
    run.finish()
    return folder


def _configs(group: str) -> list[str]:
    """The config names of ``conf/<group>``."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _choice(value: str | None, group: str, flag: str) -> str | None:
    """None when ``value`` is unset or a config in ``conf/<group>``; else the error line."""
    choices = _configs(group)
    if value is None or value in choices:
        return None
    return f"{flag} {value!r}: no such {group}; choices: {', '.join(choices)}"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(PUBLISHED), help="folder with records/ inside")
    p.add_argument("--claims", default=None, help="claims file (default: the published one)")
    p.add_argument(
        "--gaps",
        default=None,
        help="why grid cells have no record (default: <results>/gaps.yaml where it exists)",
    )
    p.add_argument("--task", help="only this task")
    p.add_argument("--tier", help="only this budget tier (smoke, cpu, paper)")
    p.add_argument("--data", help="only this data source (embedded, disk)")
    p.add_argument("--out", help="write the markdown to this file (default: stdout)")
    p.add_argument("--plots", help="write the plots into this folder")
    p.add_argument(
        "--publish",
        action="store_true",
        help="regenerate <results>/LEADERBOARD.md and <results>/plots (no filters)",
    )
    p.add_argument(
        "--archive",
        action="store_true",
        help=f"move superseded records (older code versions) to <results>/{ARCHIVE}/records",
    )
    p.add_argument(
        "--one-version",
        action="append",
        metavar="TASK",
        help=f"move TASK's records of every older code version or baseline recipe to "
        f"<results>/{ARCHIVE}/records, points not rerun included (repeatable)",
    )
    p.add_argument("--include-smoke", action="store_true", help="also the smoke-tier tables")
    p.add_argument("--failed", action="store_true", help="also list the failed runs")
    p.add_argument(
        "--wandb", action="store_true", help="also log the tables as W&B Tables (offline)"
    )
    p.add_argument("--runs-dir", default="runs", help="where the offline W&B run goes")
    return p.parse_args(argv)


def _can_write(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried: root ignores the mode bits)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _check(args: argparse.Namespace) -> str | None:
    """The first bad argument as an error line, before anything is read or written."""
    for value, group, flag in (
        (args.task, "task", "--task"),
        (args.tier, "budget", "--tier"),
        (args.data, "data", "--data"),
    ):
        if why := _choice(value, group, flag):
            return why
    filters = [f for f in ("task", "tier", "data") if getattr(args, f)]
    if args.publish and (filters or args.include_smoke or args.failed or args.out):
        given = ", ".join(f"--{f.replace('_', '-')}" for f in filters) or "--out/--include-smoke"
        return f"--publish regenerates the whole published leaderboard; it takes no {given}"
    results = Path(args.results)
    if not (results / "records").is_dir():
        return f"--results {results}: no records/ folder there; run `python run.py` first"
    claims = Path(args.claims) if args.claims else results / "claims.yaml"
    if args.claims and not claims.is_file():
        return f"--claims {claims}: no such file"
    if args.gaps and not Path(args.gaps).is_file():
        return f"--gaps {args.gaps}: no such file"
    writes = [results] if args.publish or args.archive or args.one_version else []
    writes += [Path(args.out).parent] if args.out else []
    writes += [Path(args.plots)] if args.plots else []
    for folder in writes:
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir() or not _can_write(probe):
            return f"{folder}: not writable"
    return None


def _archive(results: Path, superseded: list[dict]) -> int:
    """Move the files of superseded records to ``<results>/archive/records/<task>/``."""
    gone = {(r["point_id"], r["run_id"]) for r in superseded}
    moved = 0
    for src in sorted((results / "records").rglob("*.json")):
        try:
            r = json.loads(src.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # malformed: reported by load_records, left where it is
        if isinstance(r, dict) and (r.get("point_id"), r.get("run_id")) in gone:
            dst = results / ARCHIVE / src.relative_to(results)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dst)
            moved += 1
    return moved


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if error := _check(args):
        print(f"error: {error}", file=sys.stderr)
        return 2
    results = Path(args.results)
    records, problems = load_records(results)
    for prob in problems:
        print(f"skipped malformed record: {prob}", file=sys.stderr)
    if not records:
        print(
            f"error: no run records under {results / 'records'}; run `python run.py` first",
            file=sys.stderr,
        )
        return 2
    for task in args.one_version or []:
        old = older_versions(records, task)
        print(f"archived {_archive(results, old)} older-version records of {task}", file=sys.stderr)
        gone = {id(r) for r in old}
        records = [r for r in records if id(r) not in gone]
    current, superseded = split_superseded(records)
    if args.archive:
        print(f"archived {_archive(results, superseded)} superseded records", file=sys.stderr)
    if not (args.include_smoke or args.tier == "smoke"):
        current = [r for r in current if r["budget"] != "smoke"]
    claims_path = Path(args.claims) if args.claims else results / "claims.yaml"
    gaps_path = Path(args.gaps) if args.gaps else results / "gaps.yaml"
    try:
        claims = load_claims(claims_path if claims_path.is_file() else PUBLISHED / "claims.yaml")
        gaps = (
            load_gaps(gaps_path, *(_configs(g) for g in ("task", "budget", "data")))
            if gaps_path.is_file()
            else {}
        )
    except RecordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tables = aggregate(current, args.task, args.tier, args.data)
    failed = failed_runs(current, args.task, args.tier, args.data) if args.failed else []
    published = results.resolve() == PUBLISHED.resolve()
    source = (
        "the published run records under `results/records/`"
        if published
        else f"the run records of the user folder `{results}` (not the published ones)"
    )
    every_failed = failed_runs(current, args.task, args.tier, args.data)
    for line in baseline_conflicts(current):
        print(f"note: {line}", file=sys.stderr)
    for cell in stale_gaps(tables, gaps):
        print(
            f"note: {cell_name(cell)} has records now; drop its entry from the gaps file",
            file=sys.stderr,
        )
    markdown = render_markdown(tables, claims, problems, failed, source, every_failed, gaps)
    out = results / "LEADERBOARD.md" if args.publish else args.out
    readme = None  # the README's glance block follows the published tables only
    if args.publish and published:
        try:
            readme = with_glance(README.read_text(), tables)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    plots = results / "plots" if args.publish else args.plots
    if out:
        write_atomic(out, markdown)
    else:
        print(markdown)
    if readme is not None:
        write_atomic(README, readme)
        print(f"wrote {README.name}'s results-at-a-glance block", file=sys.stderr)
    if plots:
        by_task = defaultdict(dict)
        for (task, data, tier), rows in tables.items():
            by_task[task][(data, tier)] = rows
        styles = method_styles(r["method"] for r in records)
        for task, panels in by_task.items():
            path = plot_task(task, panels, Path(plots) / f"{task}.png", styles)
            print(f"wrote {path}", file=sys.stderr)
    print(
        f"{'wrote ' + str(out) if out else 'printed'}: {sum(len(r) for r in tables.values())} rows "
        f"from {len(current)} records ({len(superseded)} superseded, {len(problems)} skipped; "
        f"{'published records' if published else 'user folder ' + str(results)})",
        file=sys.stderr,
    )
    if args.wandb:
        print(f"W&B (offline): {log_wandb(tables, args.runs_dir)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
