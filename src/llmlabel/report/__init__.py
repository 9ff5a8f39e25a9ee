"""The stakeholder report: one self-contained HTML file (inline CSS and SVG, no script, no
network) saying how far a project is, what it cost, how much its voters agree, how well its
posteriors are calibrated, and how accurate the exported dataset is likely to be.

``build_report`` reads everything in one read-only transaction and computes the figures with
the ``quality`` functions (the same ones the CLI and the API print); ``render_html`` only lays
them out. Intervals are everywhere, because a stakeholder will act on the numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from llmlabel.config import ProjectConfig
from llmlabel.quality import audit as audits
from llmlabel.quality import monitoring
from llmlabel.quality.dataset import (
    HUMAN_KINDS,
    ProjectData,
    load_predicted_distributions,
    load_project,
)
from llmlabel.quality.intervals import NAN_INTERVAL, affordable_boot
from llmlabel.quality.summary import (
    AgreementSummary,
    Calibration,
    DatasetAccuracy,
    agreement_summary,
    dataset_accuracy,
    heldout_calibration,
)
from llmlabel.report import svg
from llmlabel.schema import SingleChoice
from llmlabel.status import ProjectStatus, VoterStatus
from llmlabel.store.db import reader
from llmlabel.store.tables import LLMCall, Project

TEMPLATES = Path(__file__).parent / "templates"
CONFUSION_VOTERS = 6


@dataclass
class ReportData:
    project: str
    config_hash: str
    generated_at: datetime
    status: ProjectStatus
    agreement: AgreementSummary
    calibration: Calibration
    accuracy: DatasetAccuracy
    audit: audits.AuditReport
    cost_by_labeler: list[tuple[str, int, float, int]] = field(default_factory=list)  # name, calls, USD, tokens
    days: list[str] = field(default_factory=list)
    human_per_day: list[int] = field(default_factory=list)
    machine_per_day: list[int] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _per_day(data: ProjectData, now: datetime, days: int) -> tuple[list[str], list[int], list[int]]:
    """Votes per UTC day over the last ``days`` days, human and machine."""
    start = (now - timedelta(days=days - 1)).date()
    labels = [(start + timedelta(days=i)).isoformat() for i in range(days)]
    where = {d: labels.index(d) for d in data.days if d in labels}
    slot = np.array([where.get(d, -1) for d in data.days], dtype=np.int64)
    assert data.vote_day is not None
    at = slot[data.vote_day] if data.days else np.zeros(0, dtype=np.int64)
    human = data.kind_mask(HUMAN_KINDS)[data.vote_voter] if data.n_voters else np.zeros(0, dtype=bool)
    ok = at >= 0
    per_human = np.bincount(at[ok & human], minlength=days)
    per_machine = np.bincount(at[ok & ~human], minlength=days)
    return [d[5:] for d in labels], per_human.tolist(), per_machine.tolist()


def _status(data: ProjectData, project: Project, llm_cost: float) -> ProjectStatus:
    """What ``status.project_status`` says, from the arrays already loaded (its queries would scan
    the votes twice more)."""
    v = data.n_voters
    cost = data.vote_cost_usd if data.vote_cost_usd is not None else np.zeros(data.vote_item.shape[0])
    votes = np.bincount(data.vote_voter, minlength=v)
    abstained = np.bincount(data.vote_voter[data.vote_label < 0], minlength=v)
    spent = np.bincount(data.vote_voter, weights=cost, minlength=v)
    order = sorted(range(v), key=lambda i: (data.voter_kind[i], data.voter_name[i]))
    return ProjectStatus(
        project=project.name, config_hash=project.config_hash, items=data.n_items,
        by_status={s: int((data.status == s).sum()) for s in ("open", "final", "escalated")},
        gold=int((data.gold >= 0).sum()), votes=int(data.vote_item.shape[0]), llm_cost_usd=llm_cost,
        voters=[VoterStatus(data.voter_name[i], data.voter_kind[i], data.voter_status[i], int(votes[i]),
                            int(abstained[i]), float(spent[i])) for i in order],
    )


def build_report(engine: Engine, *, project: Project, config: ProjectConfig, n_boot: int = 1000, days: int = 14,
                 now: datetime | None = None) -> ReportData:
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    with Session(reader(engine)) as session:
        data = load_project(session, project=project, config=config, cost=True, day=True)
        serum = load_predicted_distributions(session, project=project, data=data)
        audit = audits.audit_report(session, project=project)
        costs = session.execute(
            select(col(LLMCall.labeler), func.count(), func.coalesce(func.sum(col(LLMCall.cost_usd)), 0.0),
                   func.coalesce(func.sum(col(LLMCall.prompt_tokens) + col(LLMCall.completion_tokens)), 0))
            .where(col(LLMCall.project_id) == project.id).group_by(col(LLMCall.labeler)).order_by(col(LLMCall.labeler))
        ).all()
        alerts = [monitoring.alert_dict(a) for a in monitoring.list_alerts(session, project=project, limit=50)]
    status = _status(data, project, float(sum(float(c[2]) for c in costs)))
    day_labels, human, machine = _per_day(data, now, days)
    boots = affordable_boot(n_boot, data.n_items)
    agreement = agreement_summary(data, n_boot=boots, truth_serum=serum)
    if isinstance(config.labels, SingleChoice):
        calibration = heldout_calibration(data, n_folds=5 if data.vote_item.size < 300_000 else 3)
    else:
        calibration = Calibration(0, None, [], NAN_INTERVAL, NAN_INTERVAL,
                                  note=f"calibration is measured for single-choice projects; this one is {config.labels.type}")
    accuracy = dataset_accuracy(data, calibration, audit.measured if audit.audited else None)
    return ReportData(
        project=project.name, config_hash=project.config_hash, generated_at=now, status=status, agreement=agreement,
        calibration=calibration, accuracy=accuracy, audit=audit,
        cost_by_labeler=[(str(n), int(c), float(u), int(t)) for n, c, u, t in costs],
        days=day_labels, human_per_day=human, machine_per_day=machine, alerts=alerts,
        seconds=time.perf_counter() - started,
    )


def _charts(d: ReportData) -> dict[str, Markup]:
    st, ag, cal, acc = d.status, d.agreement, d.calibration, d.accuracy
    charts = {
        "progress": svg.stacked_bar([(k, float(v)) for k, v in st.by_status.items()], title="items per status"),
        "throughput": svg.columns(d.days, [("human votes", d.human_per_day), ("machine votes", d.machine_per_day)],
                                  title="votes per day"),
        "agreement": svg.intervals([
            ("Krippendorff α, humans", ag.human_alpha.estimate, ag.human_alpha.low, ag.human_alpha.high),
            *([("Krippendorff α (interval), humans", ag.human_alpha_interval.estimate, ag.human_alpha_interval.low,
                ag.human_alpha_interval.high)] if ag.human_alpha_interval else []),
            ("Krippendorff α, all voters", ag.all_alpha.estimate, ag.all_alpha.low, ag.all_alpha.high),
            ("Fleiss κ, humans", ag.human_fleiss.estimate, ag.human_fleiss.low, ag.human_fleiss.high),
            ("κ, LLM vs human majority", ag.llm_vs_human_kappa.estimate, ag.llm_vs_human_kappa.low,
             ag.llm_vs_human_kappa.high),
        ], lo=-0.2, hi=1.0, reference=0.0, title="agreement with 95% intervals"),
        "accuracy": svg.intervals(
            [("promised by the posteriors", acc.expected.estimate, acc.expected.low, acc.expected.high)]
            + ([("consensus on held-out gold", acc.heldout_gold.estimate, acc.heldout_gold.low, acc.heldout_gold.high)]
               if acc.heldout_gold else [])
            + ([("measured by audit", acc.audit.estimate, acc.audit.low, acc.audit.high)] if acc.audit else []),
            lo=0.5, hi=1.0, title="dataset accuracy with 95% intervals"),
    }
    if cal.rows:
        charts["reliability"] = svg.reliability_diagram(cal.rows, title="reliability diagram of consensus posteriors")
    if cal.confusion:
        charts["confusion_consensus"] = svg.heatmap(cal.confusion, ag.classes, ag.classes,
                                                    title="consensus vs gold (held out)", col_title="consensus")
    if d.cost_by_labeler:
        charts["cost"] = svg.hbars([(n, u) for n, _, u, _ in d.cost_by_labeler], unit="$", title="LLM spend per labeler")
    return {k: Markup(v) for k, v in charts.items()}


def _voter_confusions(d: ReportData) -> list[tuple[str, Markup]]:
    rows = sorted((v for v in d.agreement.voters if v.gold.n), key=lambda v: -v.gold.n)[:CONFUSION_VOTERS]
    cls = d.agreement.classes
    return [(f"{v.name} ({v.kind})", Markup(svg.heatmap(v.confusion_gold, cls, cls, title=f"{v.name} vs gold", cell=28)))
            for v in rows]


def render_html(d: ReportData) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["iv"] = lambda i: str(i)
    env.filters["pct"] = lambda x: "-" if x is None or x != x else f"{x:.1%}"
    return env.get_template("report.html.j2").render(d=d, charts=_charts(d), voter_confusions=_voter_confusions(d))


def write_report(engine: Engine, *, project: Project, config: ProjectConfig, path: Path, **kw: Any) -> ReportData:
    data = build_report(engine, project=project, config=config, **kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_html(data), encoding="utf-8")
    tmp.replace(path)
    return data


__all__ = ["ReportData", "build_report", "render_html", "write_report"]
