"""Adjudication: reviewers settle what consensus escalated; their answer is final and gold.

A resolution does three things at once, in one transaction: the item is final (decided by
adjudication), it becomes gold (source "adjudicated"), and every voter's reliability is
refitted with that new gold, so a reviewer's work improves the weights of everyone who
voted on it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import exists, func
from sqlmodel import Session, col, select

from llmlabel import decisions
from llmlabel.config import ProjectConfig
from llmlabel.errors import ConflictError, InputError, NotFoundError
from llmlabel.rendering import render_item
from llmlabel.store.tables import Adjudication, Gold, Item, Lease, Project, Vote, Voter, utcnow
from llmlabel.votes import mark_gold_answers

CONFLICT_KINDS = ("llm_vs_llm", "llm_vs_human", "human_vs_human", "audit", "none")


@dataclass
class CaseVote:
    voter: str
    kind: str
    label: Any
    confidence: float | None
    reliability: float | None
    rationale: str | None
    unsure: bool
    comment: str | None


@dataclass
class ReviewCase:
    item_id: str
    text: str
    fields: dict[str, Any]
    conflict_kind: str
    posterior: Any
    blind: bool
    votes: list[CaseVote] = field(default_factory=list)


def case_votes(session: Session, item_id: int, reliabilities: dict[int, float]) -> list[CaseVote]:
    rows = session.exec(
        select(Vote, Voter).join(Voter, col(Voter.id) == Vote.voter_id).where(Vote.item_id == item_id).order_by(col(Vote.id))
    ).all()
    return [
        CaseVote(voter=vr.name, kind=vr.kind, label=v.label, confidence=v.confidence,
                 reliability=reliabilities.get(vr.id), rationale=v.rationale or v.abstain_reason,  # type: ignore[arg-type]
                 unsure=v.unsure, comment=v.comment)
        for v, vr in rows
    ]


def next_case(
    session: Session, *, project: Project, config: ProjectConfig, reviewer: Voter, kind: str | None = None,
) -> ReviewCase | None:
    """The oldest escalated item no other reviewer is holding; held for this reviewer a while."""
    if kind is not None and kind not in CONFLICT_KINDS:
        raise InputError(f"conflict kind {kind!r} is not one of: {', '.join(CONFLICT_KINDS)}")
    now = utcnow()
    held_by_other = exists().where(
        col(Lease.item_id) == Item.id, col(Lease.voter_id) != reviewer.id, col(Lease.state) == "active", col(Lease.expires_at) > now,
    )
    q = select(Item).where(Item.project_id == project.id, Item.status == "escalated", ~held_by_other)
    if kind is not None:
        q = q.where(Item.conflict_kind == kind)
    item = session.exec(q.order_by(col(Item.updated_at), col(Item.id)).limit(1)).first()
    if item is None:
        return None
    _hold(session, item=item, reviewer=reviewer, seconds=config.policy.lease_seconds)
    blind = config.policy.blind_review and _blind_label(session, item.id, reviewer.id) is None  # type: ignore[arg-type]
    reliabilities = decisions.voter_reliabilities(session, project=project, config=config)
    return ReviewCase(
        item_id=item.external_id,
        text=render_item(config.item_template, item.fields),
        fields=item.fields,
        conflict_kind=item.conflict_kind or "none",
        posterior=None if blind else item.posterior,
        blind=blind,
        votes=[] if blind else case_votes(session, item.id, reliabilities),  # type: ignore[arg-type]
    )


def _hold(session: Session, *, item: Item, reviewer: Voter, seconds: int) -> None:
    lease = session.exec(select(Lease).where(Lease.item_id == item.id, Lease.voter_id == reviewer.id)).first()
    expires = utcnow() + timedelta(seconds=seconds)
    if lease is None:
        lease = Lease(project_id=item.project_id, item_id=item.id, voter_id=reviewer.id,  # type: ignore[arg-type]
                      token=secrets.token_urlsafe(24), expires_at=expires, is_human=False)
    lease.state, lease.expires_at = "active", expires
    session.add(lease)
    session.flush()


def _blind_label(session: Session, item_id: int, reviewer_id: int) -> Any:
    return session.exec(
        select(Adjudication.blind_label).where(
            Adjudication.item_id == item_id, Adjudication.reviewer_id == reviewer_id, Adjudication.blind_label.is_not(None)
        )
    ).first()


def answer_blind(
    session: Session, *, project: Project, config: ProjectConfig, reviewer: Voter, item_external_id: str, label: Any
) -> None:
    """Record the reviewer's own answer before they see the votes (so the votes cannot anchor it)."""
    item = _escalated(session, project, item_external_id)
    canonical = config.labels.validate_label(label, item.fields, where=f" (item {item_external_id!r})")
    session.add(Adjudication(project_id=project.id, item_id=item.id, reviewer_id=reviewer.id,  # type: ignore[arg-type]
                             label=canonical, blind_label=canonical, note="blind answer", conflict_kind=item.conflict_kind))


def _escalated(session: Session, project: Project, item_external_id: str) -> Item:
    item = session.exec(
        select(Item).where(Item.project_id == project.id, Item.external_id == item_external_id)
    ).first()
    if item is None:
        raise NotFoundError(f"no item {item_external_id!r} in project {project.name!r}")
    if item.status != "escalated":
        raise ConflictError(f"item {item_external_id!r} is {item.status}, not escalated: nothing to resolve")
    return item


def resolve(
    session: Session, *, project: Project, config: ProjectConfig, reviewer: Voter, item_external_id: str,
    label: Any, note: str = "",
) -> Item:
    item = _escalated(session, project, item_external_id)
    canonical = config.labels.validate_label(label, item.fields, where=f" (item {item_external_id!r})")
    if config.policy.blind_review and _blind_label(session, item.id, reviewer.id) is None:  # type: ignore[arg-type]
        raise ConflictError("this project reviews blind: answer the item blind first, then resolve it")
    session.add(Adjudication(project_id=project.id, item_id=item.id, reviewer_id=reviewer.id,  # type: ignore[arg-type]
                             label=canonical, note=note, conflict_kind=item.conflict_kind))
    gold = session.exec(select(Gold).where(Gold.item_id == item.id)).first()
    if gold is None:
        session.add(Gold(project_id=project.id, item_id=item.id, label=canonical, source="adjudicated"))  # type: ignore[arg-type]
        mark_gold_answers(session, item_ids=[item.id])  # type: ignore[list-item]
    else:
        gold.label, gold.source = canonical, "adjudicated"
        session.add(gold)
    item.status, item.final_label, item.confidence = "final", canonical, 1.0
    item.decided_by, item.decided_at, item.updated_at = "adjudication", utcnow(), utcnow()
    item.next_kind = None
    item.votes_needed = 0
    session.add(item)
    session.flush()
    decisions.refit(session, project=project, config=config)
    return item


def queue_counts(session: Session, *, project: Project) -> dict[str, int]:
    rows = session.exec(
        select(Item.conflict_kind, func.count()).where(Item.project_id == project.id, Item.status == "escalated")
        .group_by(Item.conflict_kind)
    ).all()
    counts = {k: 0 for k in CONFLICT_KINDS}
    for kind, n in rows:
        counts[kind or "none"] = int(n)
    return counts
