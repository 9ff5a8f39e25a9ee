"""The ``llmlabel`` command. Commands are thin: they parse options, call service functions and
render results. Exit codes: 0 ok, 1 a user error (one line saying what to fix), 2 usage."""

from __future__ import annotations

import sys

import click
import typer
from rich.console import Console
from rich.markup import escape

from llmlabel.cli import data_cmds, db_cmds, label_cmds, quality_cmds, quickstart_cmds, service_cmds
from llmlabel.errors import LLMLabelError

app = typer.Typer(
    name="llmlabel",
    help="Grow labeled datasets cheaply: LLM labelers and humans vote, calibrated consensus decides.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_cmds.register(app)
label_cmds.register(app)
service_cmds.register(app)
quickstart_cmds.register(app)
quality_cmds.register(app)
app.add_typer(db_cmds.app, name="db")


def main(argv: list[str] | None = None) -> None:
    err = Console(stderr=True)
    try:
        app(args=argv, standalone_mode=False)
    except (typer.Exit, click.exceptions.Exit) as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, click.exceptions.Abort):
        err.print("aborted")
        sys.exit(1)
    except (typer.TyperException, click.ClickException) as exc:  # usage errors
        exc.show()  # type: ignore[union-attr]
        sys.exit(2)
    except LLMLabelError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    sys.exit(0)
