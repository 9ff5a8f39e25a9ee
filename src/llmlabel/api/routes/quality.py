"""Quality: alerts (list, check, acknowledge), agreement, the HTML report, Prometheus metrics.

``/metrics`` takes the same bearer token as the API (Prometheus sends one with
``authorization: {credentials: …}`` in its scrape config) and shows only the projects the
token's account may see: counts only, never item content or labels.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, PlainTextResponse
from pydantic import BaseModel
from sqlmodel import col, select

from llmlabel.api.deps import EngineDep, PrincipalDep, ProjectAccess, SessionDep, project_access
from llmlabel.errors import PermissionDeniedError
from llmlabel.quality import monitoring
from llmlabel.store.tables import Project

router = APIRouter(tags=["quality"])
Admin = Annotated[ProjectAccess, Depends(project_access("admin"))]
Staff = Annotated[ProjectAccess, Depends(project_access("admin", "reviewer"))]
PREFIX = "/api/v1/projects/{name}"


class AlertOut(BaseModel):
    id: int
    kind: str
    subject: str | None
    value: float | None
    low: float | None
    high: float | None
    message: str
    created_at: str
    acknowledged_at: str | None


class IntervalOut(BaseModel):
    estimate: float | None
    low: float | None
    high: float | None
    n: int


class VoterAgreementOut(BaseModel):
    name: str
    kind: str
    status: str
    votes: int
    gold_accuracy: IntervalOut
    consensus_agreement: IntervalOut
    vs_human_majority: IntervalOut | None
    truth_serum: float | None


class PairOut(BaseModel):
    voter_a: str
    voter_b: str
    kappa: IntervalOut
    agreement: float


class AgreementOut(BaseModel):
    human_alpha: IntervalOut
    human_alpha_interval: IntervalOut | None  # interval-level α, when the classes are numbers
    all_alpha: IntervalOut
    human_fleiss_kappa: IntervalOut
    llm_vs_human_kappa: IntervalOut
    llm_vs_human_agreement: IntervalOut
    pairs: list[PairOut]
    voters: list[VoterAgreementOut]


def _alert(a: Any) -> AlertOut:
    return AlertOut(**monitoring.alert_dict(a))


@router.get(PREFIX + "/alerts", response_model=list[AlertOut])
def get_alerts(
    access: Staff, everything: Annotated[bool, Query(alias="all", description="include acknowledged alerts")] = False,
) -> list[AlertOut]:
    """Alerts of the project, newest first (open ones only unless ``all=true``)."""
    return [_alert(a) for a in monitoring.list_alerts(access.session, project=access.project, include_acknowledged=everything)]


@router.post(PREFIX + "/alerts/check", response_model=list[AlertOut])
def post_check(
    access: Admin,
    window_hours: Annotated[float, Query(gt=0, le=24 * 31)] = 24.0,
    windows: Annotated[int, Query(ge=3, le=60)] = 8,
) -> list[AlertOut]:
    """Measure the latest window against the earlier ones and store the new alerts."""
    new = monitoring.check(access.session, project=access.project, config=access.config,
                           window=timedelta(hours=window_hours), n_windows=windows)
    return [_alert(a) for a in new]


@router.post(PREFIX + "/alerts/{alert_id}/ack", response_model=AlertOut)
def post_ack(alert_id: int, access: Admin) -> AlertOut:
    return _alert(monitoring.acknowledge(access.session, project=access.project, alert_id=alert_id))


def _iv(i: Any) -> IntervalOut:
    return IntervalOut(**i.as_dict())


@router.get(PREFIX + "/agreement", response_model=AgreementOut)
def get_agreement(access: Staff, n_boot: Annotated[int, Query(ge=50, le=2000)] = 500) -> AgreementOut:
    """Krippendorff's α, Fleiss' κ, Cohen's κ per pair, LLM vs human, per voter; 95% intervals."""
    from llmlabel.quality.dataset import load_predicted_distributions, load_project
    from llmlabel.quality.intervals import affordable_boot
    from llmlabel.quality.summary import agreement_summary

    data = load_project(access.session, project=access.project, config=access.config)
    serum = load_predicted_distributions(access.session, project=access.project, data=data)
    s = agreement_summary(data, n_boot=affordable_boot(n_boot, data.n_items), truth_serum=serum)
    return AgreementOut(
        human_alpha=_iv(s.human_alpha),
        human_alpha_interval=_iv(s.human_alpha_interval) if s.human_alpha_interval else None, all_alpha=_iv(s.all_alpha), human_fleiss_kappa=_iv(s.human_fleiss),
        llm_vs_human_kappa=_iv(s.llm_vs_human_kappa), llm_vs_human_agreement=_iv(s.llm_vs_human_agreement),
        pairs=[PairOut(voter_a=p.voter_a, voter_b=p.voter_b, kappa=_iv(p.kappa), agreement=p.agreement) for p in s.pairs],
        voters=[VoterAgreementOut(name=v.name, kind=v.kind, status=v.status, votes=v.votes, gold_accuracy=_iv(v.gold),
                                  consensus_agreement=_iv(v.consensus),
                                  vs_human_majority=_iv(v.vs_human) if v.vs_human else None, truth_serum=v.truth_serum)
                for v in s.voters],
    )


@router.get(PREFIX + "/report", response_class=HTMLResponse)
def get_report(access: Staff, engine: EngineDep) -> HTMLResponse:
    """The stakeholder report as one self-contained HTML page (what ``llmlabel report`` writes)."""
    from llmlabel.report import build_report, render_html

    data = build_report(engine, project=access.project, config=access.config)
    return HTMLResponse(render_html(data), headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:"})


@router.get("/metrics", response_class=PlainTextResponse, tags=["meta"])
def get_metrics(session: SessionDep, principal: PrincipalDep) -> PlainTextResponse:
    """Prometheus text format: items per status, votes per kind, LLM calls and spend, alerts —
    aggregated per project, for the projects this token may see (admins and reviewers only)."""
    if principal.role not in ("admin", "reviewer"):
        raise PermissionDeniedError("metrics need an admin or reviewer token")
    ids = None if principal.role == "admin" else sorted(principal.project_ids)
    if ids is None:
        ids = [i for i in session.exec(select(col(Project.id))).all() if i is not None]
    return PlainTextResponse(monitoring.prometheus_text(session, project_ids=ids),
                             media_type="text/plain; version=0.0.4; charset=utf-8")
