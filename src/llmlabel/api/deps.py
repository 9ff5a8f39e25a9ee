"""Request dependencies: settings, a database session per request, the caller, the project."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from llmlabel.access import Principal, authenticate, project_caller, voter_for
from llmlabel.config import ProjectConfig
from llmlabel.errors import AuthenticationError
from llmlabel.projects import project_config
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Project, Voter

T = TypeVar("T")

@dataclass(frozen=True)
class ApiSettings:
    max_body_bytes: int = 2_000_000
    allow_private_callbacks: bool = False
    callback_interval_seconds: float = 1.0
    refit_interval_seconds: float = 60.0
    decision_batch_seconds: float = 0.02  # 0: each vote re-decides its item in its own transaction
    fit_in_child_process: bool = False  # background fits and the periodic refit off the serving process (serve: on)
    web_cookie_name: str = "llmlabel_token"


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_settings(request: Request) -> ApiSettings:
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


async def get_token(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    settings: ApiSettings = request.app.state.settings
    return _token(request, authorization, settings.web_cookie_name)


TokenDep = Annotated[str, Depends(get_token)]


def get_principal(session: SessionDep, token: TokenDep) -> Principal:
    return authenticate(session, token=token)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


@dataclass
class ProjectAccess:
    project: Project
    config: ProjectConfig
    principal: Principal
    session: Session
    known_voter: Voter | None = None

    def voter(self) -> Voter:
        if self.known_voter is None:
            self.known_voter = voter_for(self.session, principal=self.principal, project=self.project,
                                         qualify=self.config.policy.qualification_tasks > 0)
        return self.known_voter


def access_for(session: Session, *, token: str, name: str, roles: tuple[str, ...]) -> ProjectAccess:
    """The token's access to the project ``name`` (404 to outsiders, 403 to the wrong role):
    how every API route and web page of a project resolves its caller."""
    caller = project_caller(session, token=token, name=name, roles=roles)
    return ProjectAccess(caller.project, project_config(session, project=caller.project), caller.principal, session,
                         caller.voter)


def project_access(*roles: str) -> Callable[[str, Session, str], ProjectAccess]:
    """A dependency granting the route to ``roles`` on the project in the path (404 to outsiders)."""

    def dep(name: str, session: SessionDep, token: TokenDep) -> ProjectAccess:
        return access_for(session, token=token, name=name, roles=roles)

    return dep


EngineDep = Annotated[Engine, Depends(get_engine)]


@dataclass(frozen=True)
class Caller:
    """The caller's token (not checked yet) and the database: what the busiest routes (an
    annotator's next task and vote) need to do all their work in one call.

    ``run`` opens the transaction, checks the caller inside it, does the work and commits
    before the response is sent, on the event loop itself. Dependencies that touch the
    database each cost a trip to the thread pool, and under load those trips (and the GIL
    contention between the pool's threads) cost more CPU than the work: measured under the
    load bench, 30% of the server's CPU; on PostgreSQL, 121 votes/s on 2 threaded workers
    against 178 on 3 workers running inline. The work is a handful of short statements, so a
    worker is never held long; concurrency comes from running several workers (processes),
    and on SQLite requests are served one at a time per process anyway (``serialize.py``).
    """

    token: str
    engine: Engine

    def run(self, work: Callable[[Session], T]) -> T:
        with session_scope(self.engine) as session:
            return work(session)

    def access(self, session: Session, *, name: str, roles: tuple[str, ...]) -> ProjectAccess:
        return access_for(session, token=self.token, name=name, roles=roles)


async def get_caller(request: Request, token: TokenDep) -> Caller:
    return Caller(token, request.app.state.engine)


CallerDep = Annotated[Caller, Depends(get_caller)]
