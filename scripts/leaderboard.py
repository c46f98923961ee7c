"""Generate ``results/LEADERBOARD.md`` and ``results/plots/<task>.png`` from the run records.

python scripts/leaderboard.py [--results results] [--task T] [--tier cpu] [--data embedded] [--wandb]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from prunebench.reporting.claims import load_claims
from prunebench.reporting.leaderboard import aggregate, failed_runs, load_records, render_markdown
from prunebench.reporting.plots import plot_task
from prunebench.reporting.records import write_atomic


def log_wandb(tables, runs_dir: str) -> str:
    """Log every table as a W&B Table in one offline run; returns the run folder."""
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
    folder = str(Path(run.dir).parent)
    run.finish()
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results", help="results directory (records/ inside)")
    p.add_argument("--claims", default=None, help="claims file (default: <results>/claims.yaml)")
    p.add_argument("--task", help="only this task")
    p.add_argument("--tier", help="only this budget tier (smoke, cpu, paper)")
    p.add_argument("--data", help="only this data source (embedded, disk)")
    p.add_argument(
        "--wandb", action="store_true", help="also log the tables as W&B Tables (offline)"
    )
    p.add_argument("--runs-dir", default="runs", help="where the offline W&B run goes")
    args = p.parse_args(argv)

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
    claims = load_claims(args.claims or results / "claims.yaml")
    tables = aggregate(records, args.task, args.tier, args.data)
    failed = failed_runs(records, args.task, args.tier, args.data)
    markdown = render_markdown(tables, claims, problems, failed)
    write_atomic(results / "LEADERBOARD.md", markdown)
    by_task = defaultdict(dict)
    for (task, data, tier), rows in tables.items():
        by_task[task][(data, tier)] = rows
    for task, panels in by_task.items():
        print(f"wrote {plot_task(task, panels, results / 'plots' / f'{task}.png')}")
    print(
        f"wrote {results / 'LEADERBOARD.md'} ({sum(len(r) for r in tables.values())} rows, "
        f"{len(records)} records, {len(failed)} failed, {len(problems)} skipped)"
    )
    if args.wandb:
        print(f"W&B (offline): {log_wandb(tables, args.runs_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
