"""Leases: how work is handed out, to annotators and LLM labeler processes alike.

A lease reserves one item for one voter until it expires. The rules live in one query so
that no caller can bend them:
- a voter is never offered an item it has voted on or holds a live lease for;
- an annotator is never offered an item it has been leased before (a lapsed human lease
  does not come back to the same person), while an LLM labeler takes back its own lapsed
  leases, which is how a crashed ``llmlabel label`` resumes;
- an item is leased to no more annotators at once than the human votes it still needs;
- LLM labelers also answer gold items, decided or not, since that measures their reliability.

On PostgreSQL the candidate items are locked ``FOR UPDATE SKIP LOCKED``, so concurrent
claimers pass each other instead of queueing; on SQLite the write transaction (BEGIN
IMMEDIATE) already serializes claims.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, func, or_, select, update
from sqlmodel import Session

from llmlabel.store.tables import Gold, Item, Lease, Vote, utcnow

HUMAN_KINDS = ("human", "expert")


@dataclass(frozen=True)
class Claim:
    lease_id: int
    token: str
    item_id: int
    expires_at: datetime


def _candidates(
    session: Session, *, project_id: int, voter_id: int, human: bool, limit: int, now: datetime,
    item_ids: list[int] | None = None, gold: bool = False,
) -> list[int]:
    voted = exists().where(Vote.item_id == Item.id, Vote.voter_id == voter_id)
    own_lease = Lease.item_id == Item.id
    if human:
        leased_before = exists().where(own_lease, Lease.voter_id == voter_id)
    else:
        leased_before = exists().where(
            own_lease, Lease.voter_id == voter_id,
            or_(Lease.state == "done", and_(Lease.state == "active", Lease.expires_at > now)),
        )
    q = select(Item.id).where(Item.project_id == project_id, ~voted, ~leased_before)
    if gold:  # a gold task: any gold item, whatever its status, in a random order
        q = q.where(exists().where(Gold.item_id == Item.id)).order_by(func.random()).limit(limit)
        return list(session.execute(q).scalars())
    if human:
        q = q.where(Item.status == "open")
    else:  # machines also answer every gold item: that is how their reliability is measured
        q = q.where(or_(Item.status == "open", exists().where(Gold.item_id == Item.id)))
    if human:
        live_human_leases = (
            select(func.count())
            .select_from(Lease)
            .where(Lease.item_id == Item.id, Lease.state == "active", Lease.expires_at > now, Lease.is_human)
            .scalar_subquery()
        )
        q = q.where(live_human_leases < Item.votes_needed)
    if item_ids is not None:
        q = q.where(Item.id.in_(item_ids))  # type: ignore[union-attr]
    q = q.order_by(Item.priority.desc(), Item.id).limit(limit)  # type: ignore[attr-defined]
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(of=Item, skip_locked=True)  # type: ignore[arg-type]
    return list(session.execute(q).scalars())


def claim(
    session: Session,
    *,
    project_id: int,
    voter_id: int,
    human: bool,
    limit: int,
    lease_seconds: int,
    item_ids: list[int] | None = None,
    gold: bool = False,
) -> list[Claim]:
    """Lease up to ``limit`` items to a voter, highest priority first (optionally among
    ``item_ids``); with ``gold``, a random gold item instead, whatever its status."""
    now = utcnow()
    expires = now + timedelta(seconds=lease_seconds)
    ids = _candidates(session, project_id=project_id, voter_id=voter_id, human=human, limit=limit, now=now,
                      item_ids=item_ids, gold=gold)
    if not ids:
        return []
    lapsed = dict(
        session.execute(
            select(Lease.item_id, Lease.id).where(Lease.voter_id == voter_id, Lease.item_id.in_(ids))  # type: ignore[attr-defined]
        ).all()
    )
    claims = []
    for item_id in ids:
        token = secrets.token_urlsafe(24)
        if item_id in lapsed:  # an LLM labeler taking back its own lapsed lease
            session.execute(
                update(Lease).where(Lease.id == lapsed[item_id])  # type: ignore[arg-type]
                .values(token=token, state="active", expires_at=expires, created_at=now)
            )
            lease_id = lapsed[item_id]
        else:
            lease = Lease(project_id=project_id, item_id=item_id, voter_id=voter_id, token=token,
                          expires_at=expires, is_human=human, is_gold=gold)
            session.add(lease)
            session.flush()
            assert lease.id is not None
            lease_id = lease.id
        claims.append(Claim(lease_id=lease_id, token=token, item_id=item_id, expires_at=expires))
    return claims


def finish(session: Session, *, lease_id: int) -> None:
    session.execute(update(Lease).where(Lease.id == lease_id).values(state="done"))  # type: ignore[arg-type]


def release(session: Session, *, lease_ids: list[int]) -> None:
    """Give leases back early (a skipped task, an interrupted run): the items return to the pool."""
    if lease_ids:
        session.execute(
            update(Lease).where(Lease.id.in_(lease_ids), Lease.state == "active")  # type: ignore[attr-defined]
            .values(state="expired", expires_at=utcnow())
        )
