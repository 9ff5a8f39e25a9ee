"""Projects: list, status, create or update from a project file, refit consensus."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends
from sqlmodel import Session, select

from llmlabel.access import visible_project
from llmlabel.api.deps import PrincipalDep, ProjectAccess, SessionDep, project_access
from llmlabel.api.schemas import ProjectIn, ProjectOut, ProjectStatusOut, RefitOut
from llmlabel.config import parse_config
from llmlabel.decisions import refit
from llmlabel.errors import InputError, PermissionDeniedError
from llmlabel.projects import sync_project
from llmlabel.status import project_status
from llmlabel.store.tables import Project

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])
Admin = Annotated[ProjectAccess, Depends(project_access("admin"))]
Staff = Annotated[ProjectAccess, Depends(project_access("admin", "reviewer"))]


def _out(session: Session, project: Project) -> ProjectOut:
    st = project_status(session, project=project)
    return ProjectOut(name=st.project, config_hash=st.config_hash, items=st.items, by_status=st.by_status,
                      gold=st.gold, votes=st.votes, llm_cost_usd=st.llm_cost_usd)


@router.get("", response_model=list[ProjectOut])
def list_projects(session: SessionDep, principal: PrincipalDep) -> list[ProjectOut]:
    """The projects this token may see."""
    projects = session.exec(select(Project).order_by(Project.name)).all()
    return [_out(session, p) for p in projects if principal.can_see(p.id)]  # type: ignore[arg-type]


@router.get("/{name}", response_model=ProjectStatusOut)
def get_project(access: Staff) -> ProjectStatusOut:
    st = project_status(access.session, project=access.project)
    return ProjectStatusOut(name=st.project, config_hash=st.config_hash, items=st.items, by_status=st.by_status,
                            gold=st.gold, votes=st.votes, llm_cost_usd=st.llm_cost_usd,
                            voters=[asdict(v) for v in st.voters])  # type: ignore[misc]


@router.put("/{name}", response_model=ProjectOut)
def put_project(name: str, body: ProjectIn, session: SessionDep, principal: PrincipalDep) -> ProjectOut:
    """Create the project, or move it to a new config version (admins only)."""
    if principal.role != "admin":
        existing = session.exec(select(Project).where(Project.name == name)).first()
        if existing is not None:
            visible_project(session, principal=principal, name=name, roles=("admin",))
        raise PermissionDeniedError("creating or changing a project needs the admin role")
    config = parse_config(body.config, "config")
    if config.name != name:
        raise InputError(f"config.name {config.name!r} does not match the project in the path {name!r}")
    project = sync_project(session, config=config)
    return _out(session, project)


@router.post("/{name}/consensus", response_model=RefitOut)
def run_consensus(access: Admin) -> RefitOut:
    """Refit voter reliability on all votes and gold, and re-decide every item."""
    report = refit(access.session, project=access.project, config=access.config)
    return RefitOut(**asdict(report))
