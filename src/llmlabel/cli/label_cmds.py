"""``llmlabel label``: run the project's LLM labelers over its pending items."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmlabel.cli.context import DbOpt, ProjectOpt, open_project
from llmlabel.errors import BudgetExceededError, ProviderError
from llmlabel.labelers.runner import LabelerStats, RunReport
from llmlabel.labelers.service import label_project, pending_counts, select_labelers


def label(
    project: ProjectOpt = Path("llmlabel.yaml"),
    db: DbOpt = None,
    labeler: Annotated[list[str] | None, typer.Option("--labeler", "-l", help="only this labeler (repeatable)")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="at most N items per labeler")] = None,
    budget: Annotated[float | None, typer.Option("--budget", min=0, help="USD cap for this run (default: policy.budget_usd)")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="budget and ledger scope (default: project + config hash)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Ask every configured LLM labeler about the pending items; each answer becomes a vote."""
    ctx = open_project(project, db)
    names = [lab.name for lab in select_labelers(ctx.config, labeler)]
    assert ctx.project.id is not None
    totals = pending_counts(ctx.engine, project_id=ctx.project.id, names=names)
    console = Console(stderr=True)
    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[cost]}"),
                    TimeElapsedColumn(), console=console, disable=quiet, transient=False)
    tasks = {n: bars.add_task(n, total=min(totals[n], limit) if limit else totals[n], cost="$0.0000") for n in names}

    def progress(stats: LabelerStats) -> None:
        bars.update(tasks[stats.name], completed=stats.items, cost=f"${stats.cost_usd:.4f}")

    with bars:
        report = label_project(ctx.engine, config=ctx.config, project_id=ctx.project.id, labelers=names, limit=limit,
                               budget_usd=budget, run_id=run_id, project_dir=project.resolve().parent, progress=progress)
    print_report(report)
    if report.budget_reached:
        raise BudgetExceededError(
            f"stopped at the budget: ${report.spent_usd:.4f} of ${report.budget_usd:.4f} spent by run {report.run_id!r}; "
            "raise --budget to continue"
        )
    if report.errors:
        raise ProviderError("; ".join(report.errors), attempts=0)


def print_report(report: RunReport) -> None:
    table = Table(title=f"run {report.run_id}", title_justify="left")
    for col in ("labeler", "votes", "abstentions", "failed", "calls", "cache hits", "cost"):
        table.add_column(col, justify="left" if col == "labeler" else "right")
    for s in report.labelers:
        table.add_row(s.name, str(s.votes), str(s.abstentions), str(s.failed), str(s.calls), str(s.cache_hits),
                      f"${s.cost_usd:.4f}")
    out = Console()
    out.print(table)
    calls = sum(s.calls for s in report.labelers)
    hits = sum(s.cache_hits for s in report.labelers)
    budget = f" of ${report.budget_usd:.4f} budget" if report.budget_usd is not None else ""
    out.print(f"{report.votes} votes, {calls} calls, {hits} cache hits, run total ${report.spent_usd:.4f}{budget}, "
              f"{report.items_per_second:.1f} items/s in {report.seconds:.1f}s")


def register(app: typer.Typer) -> None:
    app.command("label")(label)
