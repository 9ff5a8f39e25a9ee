"""Human tasks: what an annotator is handed next, and what happens to their answer.

A task carries the item as voters see it and the instructions, nothing else: no other
votes (LLM suggestions only if the project opts in), no gold flag. Gold tasks are leased
through the same table and served in exactly the same shape, so an annotator cannot tell
them apart; only the lease row knows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from llmlabel import decisions
from llmlabel.config import ProjectConfig
from llmlabel.errors import ConflictError, InputError, NotFoundError, PermissionDeniedError
from llmlabel.quality.gating import gold_record, next_status, set_status, wants_gold
from llmlabel.rendering import render_item
from llmlabel.schema import Options
from llmlabel.store import leases
from llmlabel.store.prepared import Prepared
from llmlabel.store.tables import Gold, Item, Lease, Project, Vote, Voter, utcnow
from llmlabel.votes import NewVote, VoteInput, record_votes

# Statements of every task request, built once: building one costs more than running it.
_ITEM = Prepared(select(col(Item.external_id), col(Item.fields)).where(col(Item.id) == bindparam("item_id")))
_LEASE = Prepared(  # sqlalchemy's select: sqlmodel's is typed for at most four columns
    sa.select(col(Lease.id), col(Lease.voter_id), col(Lease.project_id), col(Lease.state), col(Lease.expires_at),
              col(Lease.created_at), col(Lease.is_gold), col(Lease.item_id), col(Item.external_id), col(Item.fields),
              col(Gold.id))
    .join(Item, col(Item.id) == Lease.item_id)
    .outerjoin(Gold, col(Gold.item_id) == Lease.item_id)
    .where(col(Lease.token) == bindparam("token"))
)
_HELD = Prepared(  # the voter's live lease, if any
    select(col(Lease.token), col(Lease.item_id), col(Lease.expires_at))
    .where(col(Lease.voter_id) == bindparam("voter_id"), col(Lease.state) == "active",
           col(Lease.expires_at) > bindparam("now"))
    .order_by(col(Lease.id))
    .limit(1)
)
_VOTE_ID = Prepared(select(col(Vote.id)).where(col(Vote.item_id) == bindparam("item_id"),
                                                col(Vote.voter_id) == bindparam("voter_id")))


@dataclass
class Task:
    lease_token: str
    item_id: str
    text: str
    fields: dict[str, Any]
    choices: list[Any]
    instructions: str
    expires_at: datetime
    suggestions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SubmitResult:
    item_id: str
    vote_id: int
    created: bool


def choices(config: ProjectConfig, fields: dict[str, Any]) -> list[Any]:
    """What a voter may answer for this item, in the order pages number them."""
    if isinstance(config.labels, Options):
        return config.labels.options_of(fields)
    if config.labels.type == "taxonomy":
        return list(config.labels.node_paths)
    return [c.name for c in config.labels.classes]


def _suggestions(session: Session, item_id: int) -> list[dict[str, Any]]:
    rows = session.exec(
        select(col(Voter.name), col(Vote.label), col(Vote.confidence))
        .join(Voter, col(Voter.id) == Vote.voter_id)
        .where(col(Vote.item_id) == item_id, col(Voter.kind).in_(("llm", "model")), col(Vote.label).is_not(None))
    ).all()
    return [{"labeler": n, "label": lab, "confidence": c} for n, lab, c in rows]


def next_task(session: Session, *, project: Project, config: ProjectConfig, voter: Voter) -> Task | None:
    """The task the voter holds, else a newly leased one; None when there is nothing for them now."""
    if voter.status == "gated":
        raise PermissionDeniedError(
            f"annotator {voter.name!r} is paused: their accuracy on gold tasks is under the project's "
            f"quality bar ({config.policy.quality_bar:.0%}); ask a project admin"
        )
    held = _HELD.first(session, {"voter_id": voter.id, "now": utcnow()})
    if held is not None:  # a reloaded page, a lost response: the task they hold, not a second lease
        token, item_id, expires_at = held
        return _task(session, config, token=token, item_id=item_id, expires_at=expires_at)
    policy = config.policy
    qualifying = voter.status == "qualifying"
    want_gold = qualifying or wants_gold(session, voter_id=voter.id, policy=policy)  # type: ignore[arg-type]
    claims: list[leases.Claim] = []
    if want_gold:
        claims = leases.claim(session, project_id=project.id, voter_id=voter.id, human=True, limit=1,  # type: ignore[arg-type]
                              lease_seconds=policy.lease_seconds, gold=True)
    if not claims and not qualifying:
        claims = leases.claim(session, project_id=project.id, voter_id=voter.id, human=True, limit=1,  # type: ignore[arg-type]
                              lease_seconds=policy.lease_seconds)
        if not claims and decisions.settle_deferred(session, project=project, config=config):
            # items whose re-decision this process still owes may want this voter
            claims = leases.claim(session, project_id=project.id, voter_id=voter.id, human=True, limit=1,  # type: ignore[arg-type]
                                  lease_seconds=policy.lease_seconds)
    if not claims:
        return None
    claim = claims[0]
    return _task(session, config, token=claim.token, item_id=claim.item_id, expires_at=claim.expires_at)


def _task(session: Session, config: ProjectConfig, *, token: str, item_id: int, expires_at: datetime) -> Task:
    found = _ITEM.first(session, {"item_id": item_id})
    assert found is not None  # the lease holds the item: it cannot be gone
    external_id, fields = found
    return Task(
        lease_token=token,
        item_id=external_id,
        text=render_item(config.item_template, fields),
        fields=fields,
        choices=choices(config, fields),
        instructions=config.instructions.guidelines,
        expires_at=expires_at,
        suggestions=_suggestions(session, item_id) if config.policy.show_suggestions else [],
    )


def submit(
    session: Session,
    *,
    project: Project,
    config: ProjectConfig,
    voter: Voter,
    lease_token: str,
    label: Any,
    unsure: bool = False,
    comment: str | None = None,
    predicted_distribution: dict[str, float] | None = None,
) -> SubmitResult:
    lease = _own_lease(session, project=project, voter=voter, lease_token=lease_token)
    if lease.state == "done":
        existing = _vote_id(session, lease.item_id, voter.id)  # type: ignore[arg-type]
        raise ConflictError(f"task for item {lease.external_id!r} was already answered"
                            + (f" (vote {existing})" if existing else ""))
    now = utcnow()
    if lease.state != "active" or lease.expires_at <= now:
        raise ConflictError(
            f"the lease on item {lease.external_id!r} expired at {lease.expires_at.isoformat()}; "
            "the item went back to the pool, fetch a new task"
        )
    canonical = config.labels.validate_label(label, lease.fields, where=f" (item {lease.external_id!r})")
    if predicted_distribution is not None:
        _check_distribution(predicted_distribution, config, lease.fields)
    vote = VoteInput(
        label=canonical, confidence=None, confidence_method="human",
        latency_ms=(now - lease.created_at).total_seconds() * 1000, unsure=unsure,
        comment=comment, predicted_distribution=predicted_distribution,
    )
    created = record_votes(session, project_id=project.id, votes=[NewVote(lease.item_id, voter.id, vote)],  # type: ignore[arg-type]
                           gold=() if lease.gold_id is None else (lease.item_id,))
    vote_id = created.get((lease.item_id, voter.id)) or _vote_id(session, lease.item_id, voter.id)  # type: ignore[arg-type]
    leases.finish(session, lease_ids=[lease.id])
    if lease.is_gold:
        _after_gold_answer(session, project=project, config=config, voter=voter)
    decisions.after_vote(session, project=project, config=config, item_id=lease.item_id)
    return SubmitResult(item_id=lease.external_id, vote_id=vote_id, created=bool(created))  # type: ignore[arg-type]


def release(session: Session, *, project: Project, voter: Voter, lease_token: str) -> None:
    """Hand a task back unanswered: the item returns to the pool (not to this voter)."""
    lease = _own_lease(session, project=project, voter=voter, lease_token=lease_token)
    if lease.state != "active":
        raise ConflictError(f"this task is already {lease.state}")
    leases.release(session, lease_ids=[lease.id])


@dataclass(frozen=True)
class _HeldLease:
    """A lease row with its item and the item's gold row, if any, in ``_LEASE``'s column order."""

    id: int
    voter_id: int
    project_id: int
    state: str
    expires_at: datetime
    created_at: datetime
    is_gold: bool
    item_id: int
    external_id: str
    fields: dict[str, Any]
    gold_id: int | None  # the item has gold now (a gold task, or an item made gold since)


def _own_lease(session: Session, *, project: Project, voter: Voter, lease_token: str) -> _HeldLease:
    """The voter's lease (with its item) under this token; 404 for anyone else's or none."""
    row = _LEASE.first(session, {"token": lease_token})
    if row is None or row[1] != voter.id or row[2] != project.id:
        raise NotFoundError("no such task for you: the lease token is unknown or belongs to someone else")
    return _HeldLease(*row)


def _vote_id(session: Session, item_id: int, voter_id: int) -> int | None:
    return _VOTE_ID.scalar(session, {"item_id": item_id, "voter_id": voter_id})


def _check_distribution(dist: dict[str, float], config: ProjectConfig, fields: dict[str, Any]) -> None:
    allowed = [str(c) for c in choices(config, fields)] if not isinstance(config.labels, Options) else [
        str(i) for i in range(len(config.labels.options_of(fields)))
    ]
    unknown = [k for k in dist if k not in allowed]
    if unknown:
        raise InputError(f"predicted_distribution has unknown labels: {', '.join(unknown[:5])}")
    if any(not 0 <= v <= 1 for v in dist.values()) or abs(sum(dist.values()) - 1) > 0.01:
        raise InputError("predicted_distribution must hold shares in [0, 1] that sum to 1")


def _after_gold_answer(session: Session, *, project: Project, config: ProjectConfig, voter: Voter) -> None:
    record = gold_record(session, voter_id=voter.id)  # type: ignore[arg-type]
    status = next_status(voter.status, record, config.policy)
    if status == voter.status:
        return
    set_status(session, voter=voter, status=status)
    if status == "gated":
        decisions.after_gating(session, project=project, config=config, voter_id=voter.id)  # type: ignore[arg-type]
