"""Projects in the store: registered from a project file, every config version kept by hash."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from sqlalchemy import bindparam
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from llmlabel.config import ProjectConfig, parse_config
from llmlabel.errors import NotFoundError
from llmlabel.store.prepared import Prepared
from llmlabel.store.tables import Project, ProjectConfigVersion, Voter


def sync_project(session: Session, *, config: ProjectConfig) -> Project:
    """Create the project or move it to this config version; old versions stay for provenance."""
    digest = config.content_hash()
    project = session.exec(select(Project).where(Project.name == config.name)).first()
    if project is None:
        project = Project(name=config.name, config_hash=digest)
        session.add(project)
        try:
            session.flush()
        except IntegrityError:  # another process registered it first
            session.rollback()
            project = session.exec(select(Project).where(Project.name == config.name)).one()
    if not _has_version(session, project.id, digest):
        session.add(ProjectConfigVersion(project_id=project.id, hash=digest, body=config.model_dump(mode="json")))  # type: ignore[arg-type]
    if project.config_hash != digest:
        project.config_hash = digest
        session.add(project)
    session.flush()
    return project


def _has_version(session: Session, project_id: int | None, digest: str) -> bool:
    stmt = select(ProjectConfigVersion.id).where(
        ProjectConfigVersion.project_id == project_id, ProjectConfigVersion.hash == digest
    )
    return session.exec(stmt).first() is not None


@lru_cache(maxsize=256)
def project_from_row(project_id: int, name: str, config_hash: str, created_at: datetime) -> Project:
    """A project row as a detached object, made once per version of the row: the busy paths
    only read it, and building or loading an ORM object cost more than the query."""
    return Project(id=project_id, name=name, config_hash=config_hash, created_at=created_at)


def project_by_id(session: Session, *, project_id: int) -> Project | None:
    row = _PROJECT_ROW.first(session, {"project_id": project_id})
    return None if row is None else project_from_row(*row)


_PROJECT_ROW = Prepared(select(col(Project.id), col(Project.name), col(Project.config_hash), col(Project.created_at))
                        .where(col(Project.id) == bindparam("project_id")))


def get_project(session: Session, *, name: str) -> Project:
    project = session.exec(select(Project).where(Project.name == name)).first()
    if project is None:
        raise NotFoundError(f"no project named {name!r}; register it by importing items with its project file")
    return project


_configs: dict[str, ProjectConfig] = {}


def project_config(session: Session, *, project: Project) -> ProjectConfig:
    """The config the project currently runs with, as stored (the API has no project file).

    Parsed once per config version: versions never change, only the project's pointer does.
    """
    cached = _configs.get(project.config_hash)
    if cached is not None and cached.name == project.name:
        return cached
    version = session.exec(
        select(ProjectConfigVersion).where(
            ProjectConfigVersion.project_id == project.id,
            ProjectConfigVersion.hash == project.config_hash,
        )
    ).one()
    config = parse_config(version.body, f"stored config {project.name}@{project.config_hash}")
    _configs[project.config_hash] = config
    return config


# built once: it runs on every annotator request, and building a statement costs more than running it
_VOTER = select(Voter).where(Voter.project_id == bindparam("project_id"), Voter.name == bindparam("name"))


def get_or_create_voter(
    session: Session, *, project_id: int, name: str, kind: str, status: str = "active"
) -> Voter:
    params = {"project_id": project_id, "name": name}
    voter = session.execute(_VOTER, params).scalars().first()
    if voter is None:
        voter = Voter(project_id=project_id, name=name, kind=kind, status=status)
        try:
            with session.begin_nested():  # another request may be creating the same voter
                session.add(voter)
        except IntegrityError:
            voter = session.execute(_VOTER, params).scalars().one()
    return voter

