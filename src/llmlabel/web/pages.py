"""The web pages: thin handlers over the same service functions as the API.

Every page authenticates from the session cookie and checks role and membership exactly as
the API does (``api.deps.access_for``): a project of another team is
404, a page the role may not use is 403. Forms post, then redirect (Post/Redirect/Get), and
every form carries a CSRF token. Each handler runs in one transaction that is rolled back
before an error becomes a page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request, Response
from sqlalchemy import func
from sqlmodel import Session, select

from llmlabel.access import authenticate
from llmlabel.adjudication import CONFLICT_KINDS, answer_blind, next_case, queue_counts, resolve
from llmlabel.api.deps import ApiSettings, EngineDep, ProjectAccess, SettingsDep, access_for
from llmlabel.config import ProjectConfig
from llmlabel.errors import AuthenticationError, InputError, NotFoundError
from llmlabel.schema import Options
from llmlabel.status import project_status
from llmlabel.store.db import reader, session_scope
from llmlabel.store.tables import Project, Vote
from llmlabel.tasks import choices as task_choices
from llmlabel.tasks import next_task, submit
from llmlabel.web import charts, metrics
from llmlabel.web.auth import (
    check_csrf,
    check_login_nonce,
    csrf_token,
    current_principal,
    end_session,
    login_nonce,
    safe_next,
    session_token,
    set_login_nonce,
    start_session,
)
from llmlabel.web.render import PageRoute, page, redirect, static_file

router = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)

ANNOTATOR = ("annotator",)
STAFF = ("reviewer", "admin")
STATIC = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}

FormText = Annotated[str, Form(max_length=5000)]
FormLabels = Annotated[list[str] | None, Form(max_length=1000)]


@dataclass(frozen=True)
class Choice:
    value: str
    text: str
    key: int | None  # the keyboard key that picks it (1-9)
    hint: str = ""


@dataclass(frozen=True)
class LabelForm:
    type: str  # single | multi | taxonomy | options
    choices: list[Choice]


def _label_form(config: ProjectConfig, fields: dict[str, Any], choices: list[Any] | None = None) -> LabelForm:
    labels = config.labels
    if choices is None:
        choices = task_choices(config, fields)
    hints: dict[str, str] = {}
    if labels.type in ("single", "multi"):
        hints = {c.name: c.definition for c in labels.classes}
    elif labels.type == "taxonomy":
        hints = dict(labels.definitions)
    out = []
    for i, choice in enumerate(choices):
        value = str(i) if isinstance(labels, Options) else str(choice)
        text = choice if isinstance(choice, str) else json.dumps(choice, ensure_ascii=False)
        out.append(Choice(value, text, i + 1 if i < 9 else None, hints.get(value, "")))
    return LabelForm(labels.type, out)


def _label_value(config: ProjectConfig, submitted: list[str] | None) -> Any:
    submitted = submitted or []
    if config.labels.type == "multi":
        return submitted
    if len(submitted) != 1:
        raise InputError("pick one label")
    return submitted[0]


def _access(session: Session, request: Request, settings: ApiSettings, name: str, roles: tuple[str, ...]) -> ProjectAccess:
    return access_for(session, token=session_token(request, settings), name=name, roles=roles)


def _nav(request: Request, settings: ApiSettings, access: ProjectAccess) -> dict[str, Any]:
    return {"who": access.principal, "csrf": csrf_token(request, settings), "project": access.project.name}


# -- session -------------------------------------------------------------------------------


@router.get("/login")
def login_form(request: Request, settings: SettingsDep, next: str = "/ui/") -> Response:
    nonce = login_nonce(request, settings)
    response = page("login.html", csrf=nonce, next=safe_next(next), error=None)
    set_login_nonce(response, request, settings, nonce)
    return response


@router.post("/login")
def login(request: Request, engine: EngineDep, settings: SettingsDep,
          token: Annotated[str, Form(max_length=256)] = "", csrf: FormText = "", next: FormText = "/ui/") -> Response:
    check_login_nonce(request, settings, csrf)
    try:
        with session_scope(reader(engine)) as session:
            authenticate(session, token=token.strip())
    except AuthenticationError:
        return page("login.html", http_status=401, csrf=csrf, next=safe_next(next),
                    error="That token is unknown or revoked. Ask an admin for one (llmlabel token create).")
    response = redirect(safe_next(next))
    start_session(response, request, settings, token.strip())
    return response


@router.get("/logout")
def logout_form(request: Request, engine: EngineDep, settings: SettingsDep) -> Response:
    with session_scope(reader(engine)) as session:
        who = current_principal(session, request, settings)
    return page("logout.html", who=who, csrf=csrf_token(request, settings))


@router.post("/logout")
def logout(request: Request, settings: SettingsDep, csrf: FormText = "") -> Response:
    check_csrf(request, settings, csrf)
    response = redirect("/ui/login")
    end_session(response, settings)
    return response


# -- projects ------------------------------------------------------------------------------


@router.get("")
def ui_root() -> Response:
    return redirect("/ui/")


@router.get("/")
def home(request: Request, engine: EngineDep, settings: SettingsDep) -> Response:
    with session_scope(reader(engine)) as session:
        who = current_principal(session, request, settings)
        projects = session.exec(select(Project).order_by(Project.name)).all()
        rows = [project_status(session, project=p) for p in projects if who.can_see(p.id)]  # type: ignore[arg-type]
        return page("home.html", who=who, csrf=csrf_token(request, settings), projects=rows)


@router.get("/p/{name}")
def dashboard(request: Request, name: str, engine: EngineDep, settings: SettingsDep) -> Response:
    with session_scope(reader(engine)) as session:
        access = _access(session, request, settings, name, STAFF)
        project = access.project
        status = project_status(session, project=project)
        flow = metrics.throughput(session, project=project)
        progress = charts.segments([("final", "final", status.by_status["final"]),
                                    ("escalated", "escalated", status.by_status["escalated"]),
                                    ("open", "open", status.by_status["open"])])
        chart = charts.columns([("human votes", "human", flow.human), ("LLM votes", "machine", flow.machine)],
                               [h.strftime("%H:00") for h in flow.hours])
        return page("dashboard.html", **_nav(request, settings, access), st=status, progress=progress,
                    flow=flow, chart=chart, agreement=metrics.agreement(session, project=project),
                    voters=metrics.voter_rows(session, project=project, status=status),
                    queue=queue_counts(session, project=project))


# -- annotate ------------------------------------------------------------------------------


@router.get("/p/{name}/annotate")
def annotate(request: Request, name: str, engine: EngineDep, settings: SettingsDep, saved: str | None = None) -> Response:
    with session_scope(engine) as session:
        access = _access(session, request, settings, name, ANNOTATOR)
        voter = access.voter()
        task = next_task(session, project=access.project, config=access.config, voter=voter)
        answered = session.exec(select(func.count()).select_from(Vote).where(Vote.voter_id == voter.id)).one()
        form = _label_form(access.config, task.fields, task.choices) if task else None
        return page("annotate.html", **_nav(request, settings, access), task=task, form=form, saved=saved,
                    answered=answered)


@router.post("/p/{name}/annotate/{lease_token}")
def answer(request: Request, name: str, lease_token: str, engine: EngineDep, settings: SettingsDep,
           csrf: FormText = "", label: FormLabels = None, unsure: Annotated[bool, Form()] = False,
           comment: FormText = "") -> Response:
    check_csrf(request, settings, csrf)
    with session_scope(engine) as session:
        access = _access(session, request, settings, name, ANNOTATOR)
        result = submit(session, project=access.project, config=access.config, voter=access.voter(),
                        lease_token=lease_token, label=_label_value(access.config, label), unsure=unsure,
                        comment=comment.strip() or None)
    return redirect(f"/ui/p/{name}/annotate?saved={quote(result.item_id, safe='')}")


# -- review --------------------------------------------------------------------------------


def _review_url(name: str, kind: str | None, **extra: str) -> str:
    query = {k: v for k, v in {"kind": kind or "", **extra}.items() if v}
    return f"/ui/p/{name}/review" + (f"?{urlencode(query)}" if query else "")


@router.get("/p/{name}/review")
def review(request: Request, name: str, engine: EngineDep, settings: SettingsDep,
           kind: str | None = None, done: str | None = None) -> Response:
    with session_scope(engine) as session:
        access = _access(session, request, settings, name, STAFF)
        counts = queue_counts(session, project=access.project)
        case = next_case(session, project=access.project, config=access.config, reviewer=access.voter(),
                         kind=kind or None)
        form = _label_form(access.config, case.fields) if case else None
        return page("review.html", **_nav(request, settings, access), counts=counts, kinds=CONFLICT_KINDS,
                    kind=kind or "", case=case, form=form, done=done)


@router.post("/p/{name}/review/blind")
def review_blind(request: Request, name: str, engine: EngineDep, settings: SettingsDep,
                 item_id: FormText = "", csrf: FormText = "", label: FormLabels = None, kind: FormText = "") -> Response:
    check_csrf(request, settings, csrf)
    with session_scope(engine) as session:
        access = _access(session, request, settings, name, STAFF)
        answer_blind(session, project=access.project, config=access.config, reviewer=access.voter(),
                     item_external_id=item_id, label=_label_value(access.config, label))
    return redirect(_review_url(name, kind))


@router.post("/p/{name}/review/resolve")
def review_resolve(request: Request, name: str, engine: EngineDep, settings: SettingsDep,
                   item_id: FormText = "", csrf: FormText = "", label: FormLabels = None, note: FormText = "",
                   kind: FormText = "") -> Response:
    check_csrf(request, settings, csrf)
    with session_scope(engine) as session:
        access = _access(session, request, settings, name, STAFF)
        item = resolve(session, project=access.project, config=access.config, reviewer=access.voter(),
                       item_external_id=item_id, label=_label_value(access.config, label), note=note.strip())
    return redirect(_review_url(name, kind, done=item.external_id))


# -- assets and the rest -------------------------------------------------------------------


@router.get("/static/{filename}")
def static(filename: str) -> Response:
    body = static_file(filename) if filename in STATIC else None
    if body is None:
        raise NotFoundError(f"no static file {filename!r}")
    return Response(body, media_type=STATIC[filename],
                    headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})


@router.get("/{rest:path}")
def not_found(rest: str) -> Response:
    raise NotFoundError(f"there is no page /ui/{rest}")
