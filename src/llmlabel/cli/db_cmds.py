"""``llmlabel db``: schema migrations."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from llmlabel.cli.context import DbOpt, ProjectOpt, database_url
from llmlabel.store.db import make_engine, upgrade

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade_cmd(project: ProjectOpt = Path("llmlabel.yaml"), db: DbOpt = None) -> None:
    """Migrate the database to the newest schema (refuses one written by a newer llmlabel)."""
    engine = make_engine(database_url(project, db))
    before, head = upgrade(engine)
    Console().print(f"database at revision {head}" + (f" (was {before or 'empty'})" if before != head else " (already current)"))
