"""Audits: a random sample of finalized items re-labeled by experts, to check what the
posteriors promise.

A dataset's accuracy estimate from its own posteriors is only as good as their calibration,
and calibration was measured on gold, which may not look like the rest of the data. An audit
measures it where it matters: on a uniform sample of the items that were actually finalized.

Drawing sends each sampled item to the reviewer queue as an escalation of kind ``audit``. The
item keeps its consensus label, confidence and posterior while it waits; the reviewer's answer
(through the ordinary review flow) becomes its final label and gold. The report compares the
reviewers' labels with the posteriors' top labels: measured accuracy (Wilson interval) against
the accuracy the posteriors predicted (Poisson-binomial interval).

Where the pre-audit label lives: in the item's stored ``posterior`` (its top label and
probability), which the review flow does not touch. This needs ``decisions.refit`` to leave
items under audit alone (as it leaves adjudicated ones) — see the module's tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import exists, func, update
from sqlmodel import Session, col, select

from llmlabel.quality.intervals import Interval, poisson_binomial_interval, wilson_interval
from llmlabel.schema import canonical_json
from llmlabel.store.tables import Adjudication, Gold, Item, Project, utcnow

AUDIT = "audit"
AUDITABLE = ("consensus", "auto")  # decided by the engine, not by gold or a reviewer


@dataclass
class AuditDraw:
    drawn: list[str]
    available: int


def draw_audit(session: Session, *, project: Project, n: int, seed: int | None = None) -> AuditDraw:
    """Send ``n`` finalized items, drawn uniformly, to the reviewer queue as audits."""
    candidates = session.execute(
        select(col(Item.id), col(Item.external_id)).where(
            col(Item.project_id) == project.id, col(Item.status) == "final", col(Item.decided_by).in_(AUDITABLE),
            ~exists().where(col(Gold.item_id) == col(Item.id)),
        ).order_by(col(Item.id))
    ).all()
    rng = np.random.default_rng(seed)
    take = min(n, len(candidates))
    picked = sorted(rng.choice(len(candidates), size=take, replace=False).tolist()) if take else []
    ids = [candidates[i][0] for i in picked]
    if ids:
        session.execute(
            update(Item).where(col(Item.id).in_(ids))
            .values(status="escalated", conflict_kind=AUDIT, next_kind=None, votes_needed=0, updated_at=utcnow())
        )
    return AuditDraw([candidates[i][1] for i in picked], len(candidates))


@dataclass
class AuditMiss:
    item_id: str
    predicted: Any
    confidence: float
    audited: Any


@dataclass
class AuditReport:
    audited: int
    pending: int
    measured: Interval  # reviewers' labels vs the posteriors' top labels
    predicted: Interval  # what the posteriors promised for the same items
    misses: list[AuditMiss] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.audited == 0:
            return "no audited item resolved yet"
        p, m = self.predicted.estimate, self.measured
        if p > m.high:
            return "the posteriors are over-confident: they promised more accuracy than the audit measured"
        if p < m.low:
            return "the posteriors are under-confident: the audit measured more accuracy than they promised"
        return "consistent: the accuracy the posteriors promised is inside the audit's interval"


def _top(posterior: Any) -> tuple[Any, float] | None:
    if not isinstance(posterior, dict) or not posterior:
        return None
    label = max(posterior, key=lambda k: posterior[k])
    return label, float(posterior[label])


def audit_report(session: Session, *, project: Project, confidence: float = 0.95) -> AuditReport:
    pending = int(session.execute(
        select(func.count()).select_from(Item).where(
            col(Item.project_id) == project.id, col(Item.status) == "escalated", col(Item.conflict_kind) == AUDIT)
    ).scalar_one())
    rows = session.execute(
        select(col(Item.external_id), col(Item.posterior), col(Adjudication.label))
        .join(Adjudication, col(Adjudication.item_id) == col(Item.id))
        .where(col(Adjudication.project_id) == project.id, col(Adjudication.conflict_kind) == AUDIT,
               col(Adjudication.blind_label).is_(None))
        .order_by(col(Adjudication.id))
    ).all()
    latest: dict[str, tuple[Any, Any]] = {}
    for ext, posterior, label in rows:  # a later resolution of the same item supersedes
        latest[ext] = (posterior, label)
    probs, right, misses = [], [], []
    for ext, (posterior, label) in latest.items():
        top = _top(posterior)
        if top is None:
            continue
        predicted, p = top
        ok = canonical_json(predicted) == canonical_json(label)
        probs.append(p)
        right.append(ok)
        if not ok:
            misses.append(AuditMiss(ext, predicted, p, label))
    n = len(right)
    measured = wilson_interval(sum(right), n, confidence)
    predicted_iv = poisson_binomial_interval(np.array(probs), confidence) if n else Interval(math.nan, math.nan, math.nan)
    misses.sort(key=lambda m: -m.confidence)
    return AuditReport(n, pending, measured, predicted_iv, misses)
