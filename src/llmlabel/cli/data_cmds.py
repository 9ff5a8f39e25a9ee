"""``llmlabel init | import | status | export``: projects and data in and out."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llmlabel.cli.context import DbOpt, ProjectOpt, open_project
from llmlabel.config import config_from_yaml
from llmlabel.errors import ConfigError, InputError
from llmlabel.export import STATUSES, export_items
from llmlabel.ingest import ImportReport, OnError, import_gold, import_items
from llmlabel.status import project_status
from llmlabel.store.db import reader, session_scope

TEMPLATES = ("sentiment", "topic", "taxonomy")
FormatOpt = Annotated[str | None, typer.Option("--format", help="jsonl, csv or parquet (default: from the file name)")]
OnErrorOpt = Annotated[
    str, typer.Option("--on-error", help="fail: import nothing if any row is bad; skip: import the good rows")
]
RejectOpt = Annotated[Path | None, typer.Option("--rejects", help="where bad rows go (default: FILE.rejects.jsonl)")]

import_app = typer.Typer(help="Import items or gold labels (JSONL, CSV, Parquet).", no_args_is_help=True)


def template_text(name: str) -> str:
    if name not in TEMPLATES:
        raise ConfigError(f"unknown template {name!r}: use one of {', '.join(TEMPLATES)}")
    return resources.files("llmlabel.project_templates").joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def init(
    path: Annotated[Path, typer.Argument(help="project file to write")] = Path("llmlabel.yaml"),
    template: Annotated[str, typer.Option("--template", "-t", help="sentiment | topic | taxonomy")] = "sentiment",
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
) -> None:
    """Write a commented example project file that validates."""
    text = template_text(template)
    config_from_yaml(text, f"template {template}")  # a template that does not validate is a bug
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    Console().print(f"wrote {path} ({template}); next: llmlabel import items FILE -p {path}")


def _check_on_error(value: str) -> OnError:
    if value not in ("fail", "skip"):
        raise InputError(f"--on-error {value!r} must be 'fail' or 'skip'")
    return value  # type: ignore[return-value]


def _print_report(report: ImportReport, what: str) -> None:
    out = Console()
    out.print(
        f"{report.path}: {report.rows} rows read, {report.inserted} {what} imported, "
        f"{report.unchanged} already present"
        + (f", {report.gold_inserted} gold labels" if what == "items" and report.gold_inserted else "")
        + (f", [yellow]{report.bad} rejected[/]" if report.bad else "")
    )
    for p in report.problems:
        out.print(f"  [yellow]{p}[/]", highlight=False)
    if report.reject_path:
        out.print(f"  every rejected row, with its reason: {report.reject_path}")


@import_app.command("items")
def import_items_cmd(
    file: Annotated[Path, typer.Argument(help="JSONL, CSV or Parquet with an id field plus any fields")],
    project: ProjectOpt = Path("llmlabel.yaml"),
    db: DbOpt = None,
    fmt: FormatOpt = None,
    on_error: OnErrorOpt = "fail",
    gold_field: Annotated[
        str | None, typer.Option("--gold-field", help="a column holding gold labels: imported as gold, hidden from voters")
    ] = None,
    rejects: RejectOpt = None,
) -> None:
    """Import items; re-importing the same ids is a no-op, changed content a reported conflict."""
    ctx = open_project(project, db)
    report = import_items(
        ctx.engine, project=ctx.project, config=ctx.config, path=file, fmt=fmt,
        on_error=_check_on_error(on_error), gold_field=gold_field, reject_path=rejects,
    )
    _print_report(report, "items")


@import_app.command("gold")
def import_gold_cmd(
    file: Annotated[Path, typer.Argument(help="rows of id, label, and optional weight and split (dev|test)")],
    project: ProjectOpt = Path("llmlabel.yaml"),
    db: DbOpt = None,
    fmt: FormatOpt = None,
    on_error: OnErrorOpt = "fail",
    label_field: Annotated[str, typer.Option("--label-field", help="the column holding the label")] = "label",
    rejects: RejectOpt = None,
) -> None:
    """Import gold labels for imported items, validated against the label schema."""
    ctx = open_project(project, db)
    report = import_gold(
        ctx.engine, project=ctx.project, config=ctx.config, path=file, fmt=fmt,
        on_error=_check_on_error(on_error), label_field=label_field, reject_path=rejects,
    )
    _print_report(report, "gold labels")


def status(project: ProjectOpt = Path("llmlabel.yaml"), db: DbOpt = None) -> None:
    """Items per status, gold, and votes per voter."""
    ctx = open_project(project, db)
    with session_scope(reader(ctx.engine)) as session:
        st = project_status(session, project=ctx.project)
    out = Console()
    out.print(f"[bold]{st.project}[/] (config {st.config_hash}): {st.items} items, {st.gold} gold, "
              f"{st.votes} votes, LLM cost ${st.llm_cost_usd:.4f}")
    table = Table("status", "items", "share")
    for name, n in st.by_status.items():
        table.add_row(name, str(n), f"{n / st.items:.1%}" if st.items else "-")
    out.print(table)
    if st.voters:
        vt = Table("voter", "kind", "state", "votes", "abstained", "cost $")
        for v in st.voters:
            vt.add_row(v.name, v.kind, v.state, str(v.votes), str(v.abstentions), f"{v.cost_usd:.4f}")
        out.print(vt)


def export(
    out_path: Annotated[Path, typer.Argument(help="output file: .jsonl, .csv or .parquet")],
    project: ProjectOpt = Path("llmlabel.yaml"),
    db: DbOpt = None,
    fmt: FormatOpt = None,
    status_filter: Annotated[
        list[str] | None, typer.Option("--status", help=f"only items with this status ({'|'.join(STATUSES)}); repeatable")
    ] = None,
    min_confidence: Annotated[float | None, typer.Option("--min-confidence", help="only items decided at least this confidently")] = None,
) -> None:
    """Write the labeled dataset with every vote's provenance."""
    ctx = open_project(project, db)
    report = export_items(
        ctx.engine, project=ctx.project, path=out_path, fmt=fmt, statuses=status_filter, min_confidence=min_confidence
    )
    Console().print(f"wrote {report.rows} items to {report.path}")


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.add_typer(import_app, name="import")
    app.command()(status)
    app.command()(export)
