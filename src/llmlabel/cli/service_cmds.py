"""``llmlabel serve | token | consensus``: the service and its access, and deciding items."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llmlabel.access import create_token, revoke_tokens
from llmlabel.cli.context import DbOpt, ProjectOpt, database_url, open_project
from llmlabel.projects import get_project
from llmlabel.store.db import open_engine, session_scope

# In token commands --project names a project to join, so the project file has a longer flag.
ProjectFileOpt = Annotated[
    Path, typer.Option("--project-file", help="project file whose database to use (default: llmlabel.yaml)")
]
token_app = typer.Typer(help="API tokens for annotators, reviewers and admins.", no_args_is_help=True)


def serve(
    project: Annotated[Path | None, typer.Option("--project", "-p", help="project file to register before serving")] = None,
    db: DbOpt = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
    allow_private_callbacks: Annotated[
        bool, typer.Option("--allow-private-callbacks", help="let batch callbacks reach private/loopback addresses")
    ] = False,
) -> None:
    """Serve the API and the web pages (annotate, review, dashboard)."""
    import uvicorn

    if project is not None:
        url = open_project(project, db).engine.url.render_as_string(hide_password=False)
    else:
        url = database_url(Path("llmlabel.yaml"), db)
        open_engine(url)  # migrate before the workers start
    os.environ["LLMLABEL_DATABASE_URL"] = url
    os.environ["LLMLABEL_ALLOW_PRIVATE_CALLBACKS"] = "true" if allow_private_callbacks else "false"
    Console(stderr=True).print(f"serving on http://{host}:{port} (docs at /docs, pages at /ui/) with {workers} worker(s)")
    uvicorn.run("llmlabel.api.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning")


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="admin | reviewer | annotator")],
    name: Annotated[str, typer.Option(help="account name (an annotator's votes carry it)")],
    project_names: Annotated[list[str] | None, typer.Option("--project", help="project the account may work on; repeatable")] = None,
    project_file: ProjectFileOpt = Path("llmlabel.yaml"),
    db: DbOpt = None,
) -> None:
    """Create an account's token; it is printed once and only its hash is stored."""
    engine = open_engine(database_url(project_file, db))
    with session_scope(engine) as session:
        projects = [get_project(session, name=n) for n in project_names or []]
        token = create_token(session, name=name, role=role, projects=projects)
    Console().print(f"token for {name} ({role}); store it now, it is not shown again:")
    print(token)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Option(help="account whose tokens to revoke")],
    project_file: ProjectFileOpt = Path("llmlabel.yaml"),
    db: DbOpt = None,
) -> None:
    engine = open_engine(database_url(project_file, db))
    with session_scope(engine) as session:
        n = revoke_tokens(session, name=name)
    Console().print(f"revoked {n} token(s) of {name}")


def consensus(
    project: ProjectOpt = Path("llmlabel.yaml"),
    db: DbOpt = None,
    final_round: Annotated[bool, typer.Option("--final-round", help="no more human votes are coming: escalate what is not settled")] = False,
) -> None:
    """Refit voter reliability on gold and every vote, then decide every item."""
    from llmlabel.decisions import refit  # numpy/scipy: loaded only by the commands that need them

    ctx = open_project(project, db)
    with session_scope(ctx.engine) as session:
        report = refit(session, project=ctx.project, config=ctx.config, final_round=final_round)
    out = Console()
    out.print(f"{report.items} items, {report.votes} votes, {report.gold} gold; fitted in {report.seconds:.2f} s")
    table = Table("status", "items")
    for status, n in sorted(report.by_status.items()):
        table.add_row(status, str(n))
    out.print(table)
    if report.calibration_method:
        out.print(f"calibration on held-out gold: ECE {report.ece_before:.3f} → {report.ece_after:.3f} "
                  f"({report.calibration_method})")
    else:
        out.print(f"calibration: not measured (needs ≥ 30 gold items with votes) {asdict(report)['gold']} gold")


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.add_typer(token_app, name="token")
    app.command()(consensus)
