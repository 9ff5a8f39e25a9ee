"""Request dependencies: settings, a database session per request, the caller, the project."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from llmlabel.access import Principal, authenticate, visible_project, voter_for
from llmlabel.config import ProjectConfig
from llmlabel.errors import AuthenticationError
from llmlabel.projects import project_config
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Project, Voter


@dataclass(frozen=True)
class ApiSettings:
    max_body_bytes: int = 2_000_000
    allow_private_callbacks: bool = False
    callback_interval_seconds: float = 1.0
    refit_interval_seconds: float = 60.0
    web_cookie_name: str = "llmlabel_token"


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    with session_scope(engine) as session:
        yield session


# scope="function": commit before the response is sent, so a client never holds a 201 for a
# vote that failed to commit, nor a lease token that is not visible yet to its next request.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]


def _token(request: Request, authorization: str | None, cookie_name: str) -> str:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationError("the Authorization header must be 'Bearer <token>'")
        return value.strip()
    cookie = request.cookies.get(cookie_name)
    if cookie:
        return cookie
    raise AuthenticationError("this needs an API token: send 'Authorization: Bearer <token>' (llmlabel token create)")


def get_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Principal:
    return authenticate(session, token=_token(request, authorization, settings.web_cookie_name))


PrincipalDep = Annotated[Principal, Depends(get_principal)]


@dataclass
class ProjectAccess:
    project: Project
    config: ProjectConfig
    principal: Principal
    session: Session

    def voter(self) -> Voter:
        return voter_for(self.session, principal=self.principal, project=self.project,
                         qualify=self.config.policy.qualification_tasks > 0)


def project_access(*roles: str):  # type: ignore[no-untyped-def]
    """A dependency granting the route to ``roles`` on the project in the path (404 to outsiders)."""

    def dep(name: str, session: SessionDep, principal: PrincipalDep) -> ProjectAccess:
        project = visible_project(session, principal=principal, name=name, roles=roles)
        return ProjectAccess(project, project_config(session, project=project), principal, session)

    return dep


EngineDep = Annotated[Engine, Depends(get_engine)]
