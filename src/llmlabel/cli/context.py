"""What every project command needs: the project file, the database, the project row."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import Engine

from llmlabel.config import ProjectConfig, load_config
from llmlabel.projects import sync_project
from llmlabel.settings import Settings
from llmlabel.store.db import default_url, open_engine, session_scope
from llmlabel.store.tables import Project

ProjectOpt = Annotated[
    Path, typer.Option("--project", "-p", help="project file (YAML)", envvar="LLMLABEL_PROJECT")
]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="database URL (default: LLMLABEL_DATABASE_URL, else llmlabel.db beside the project file)"),
]


@dataclass
class ProjectContext:
    config: ProjectConfig
    engine: Engine
    project: Project
    path: Path


def database_url(project_file: Path, db: str | None) -> str:
    return db or Settings().database_url or default_url(project_file.resolve().parent)


def open_project(project_file: Path, db: str | None) -> ProjectContext:
    config = load_config(project_file)
    engine = open_engine(database_url(project_file, db))
    with session_scope(engine) as session:
        project = sync_project(session, config=config)
    return ProjectContext(config=config, engine=engine, project=project, path=project_file)
