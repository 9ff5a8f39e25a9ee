"""``llmlabel quickstart``: the whole job on a bundled real dataset, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def quickstart(
    workdir: Annotated[Path, typer.Option("--dir", help="where the project, database and outputs go (replaced)")] = Path("llmlabel-quickstart"),
    no_llm: Annotated[bool, typer.Option("--no-llm", help="skip the local LLM labeler")] = False,
    items: Annotated[int, typer.Option("--items", min=20, max=200, help="how many of the 200 shipped RTE pairs to use")] = 60,
) -> None:
    """Label a real 200-item dataset end to end: LLM votes, real crowd votes replayed through
    the API, dynamic consensus, review, export."""
    from llmlabel.quickstart import run

    out = Console()
    with out.status("working…") as status:
        def progress(message: str) -> None:
            out.print(f"[green]•[/] {message}", highlight=False)
            status.update(message)

        s = run(workdir, progress=progress, label_with_llm=not no_llm, items=items)
    table = Table("", "", title="quickstart summary", show_header=False)
    acc = f"{s.accuracy:.1%} on {s.accuracy_items} final items with held-back gold" if s.accuracy is not None else "-"
    table.add_row("items", f"{s.items}: {s.final} final, {s.escalated} escalated, {s.open} open")
    table.add_row("accuracy", acc)
    table.add_row("human votes", f"{s.human_votes_used} used of {s.human_votes_available} available "
                  f"({s.votes_per_item:.2f} per item vs fixed redundancy {s.fixed_redundancy:.0f})")
    table.add_row("LLM votes", f"{s.llm_votes}, cost ${s.llm_cost_usd:.4f}")
    table.add_row("reviewed", f"{s.resolved} escalations resolved through the review API")
    for name, path in s.files.items():
        table.add_row(name, path)
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command()(quickstart)
