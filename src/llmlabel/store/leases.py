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
claimers pass each other instead of queueing, and judged again once locked (see
``_candidates``); on SQLite the write transaction (BEGIN IMMEDIATE) already serializes claims.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session

from llmlabel.store.tables import Gold, Item, Lease, Vote, utcnow

_LEASES = Lease.__table__  # type: ignore[attr-defined]
HUMAN_KINDS = ("human", "expert")
RECHECK_ROUNDS = 5
WINDOW = 64


@dataclass(frozen=True)
class Claim:
    lease_id: int
    token: str
    item_id: int
    expires_at: datetime


def _eligible(*, voter_id: int, human: bool, now: datetime, gold: bool) -> list[Any]:
    """The conditions an item (of the project) must meet to be leased to this voter now."""
    voted = exists().where(Vote.item_id == Item.id, Vote.voter_id == voter_id)
    own_lease = Lease.item_id == Item.id
    if human:
        leased_before = exists().where(own_lease, Lease.voter_id == voter_id)
    else:
        leased_before = exists().where(
            own_lease, Lease.voter_id == voter_id,
            or_(Lease.state == "done", and_(Lease.state == "active", Lease.expires_at > now)),
        )
    conditions: list[Any] = [~voted, ~leased_before]
    if gold:  # a gold task: any gold item, whatever its status
        conditions.append(exists().where(Gold.item_id == Item.id))
    elif human:
        live_human_leases = (
            select(func.count())
            .select_from(Lease)
            .where(Lease.item_id == Item.id, Lease.state == "active", Lease.expires_at > now, Lease.is_human)
            .scalar_subquery()
        )
        conditions += [Item.status == "open", live_human_leases < Item.votes_needed]
    else:  # machines also answer every gold item: that is how their reliability is measured
        conditions.append(or_(Item.status == "open", exists().where(Gold.item_id == Item.id)))
    return conditions


def _candidates(
    session: Session, *, project_id: int, voter_id: int, human: bool, limit: int, now: datetime,
    item_ids: list[int] | None = None, gold: bool = False,
) -> list[int]:
    conditions = _eligible(voter_id=voter_id, human=human, now=now, gold=gold)
    in_project = [Item.project_id == project_id, *conditions]
    if gold:  # in a random order
        q = select(Item.id).where(*in_project).order_by(func.random()).limit(limit)
        return list(session.execute(q).scalars())
    if item_ids is not None:
        return _first(session, select(Item.id).where(Item.id.in_(item_ids), *in_project), in_project, limit, by_id=True)  # type: ignore[union-attr]
    if not human:
        return _first(session, select(Item.id).where(*in_project), in_project, limit)
    # An annotator's task: the queue is walked a window at a time, so the conditions (three
    # correlated subqueries) are judged on WINDOW items rather than on every open item; most
    # open items share one priority (nobody has voted on them), which no index orders by age.
    # The window's items are the project's, so the project is not named again: that would
    # tempt the planner into the queue index (all open items) instead of the primary key.
    after: tuple[float, int] | None = None
    while True:
        window = session.execute(_window(project_id, after)).all()
        ids = [i for i, _ in window]
        found = _first(session, select(Item.id).where(Item.id.in_(ids), *conditions), conditions, limit, by_id=True) if ids else []  # type: ignore[union-attr]
        if found or len(window) < WINDOW:
            return found
        after = (window[-1][1], window[-1][0])


def _window(project_id: int, after: tuple[float, int] | None) -> Any:
    """The next WINDOW open items in queue order: priority, then age (from the index alone)."""
    q = select(Item.id, Item.priority).where(Item.project_id == project_id, Item.status == "open")
    if after is not None:
        priority, item_id = after
        q = q.where(or_(Item.priority < priority, and_(Item.priority == priority, Item.id > item_id)))
    return q.order_by(Item.priority.desc(), Item.id).limit(WINDOW)  # type: ignore[attr-defined]


def _first(session: Session, q: Any, conditions: list[Any], limit: int, by_id: bool = False) -> list[int]:
    """The first ``limit`` items of ``q`` in queue order, locked on PostgreSQL. With ``by_id``
    (``q`` names its few items), the order is written so that no index can serve it, or the
    planner walks the queue index through every open item to find the named ones."""
    q = q.order_by(-Item.priority if by_id else Item.priority.desc(), Item.id).limit(limit)  # type: ignore[operator]
    if session.get_bind().dialect.name != "postgresql":
        return list(session.execute(q).scalars())
    # The locking statement judges rows on its snapshot; it may reach a row just after another
    # claimer committed a lease on it (a row lock alone does not make PostgreSQL re-read the
    # leases). Once the rows are ours, judge them again in a new statement, which sees every
    # lease committed before we locked them; if none is still free, look further down.
    passed: set[int] = set()
    for _ in range(RECHECK_ROUNDS):
        query = q.where(Item.id.not_in(passed)) if passed else q
        locked = list(session.execute(query.with_for_update(of=Item, skip_locked=True)).scalars())
        if not locked:
            return []
        still = set(session.execute(select(Item.id).where(Item.id.in_(locked), *conditions)).scalars())  # type: ignore[union-attr]
        if still:
            return [i for i in locked if i in still]
        passed.update(locked)
    return []


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
    lapsed = {} if human else dict(  # an annotator is never offered an item leased to it before
        session.execute(
            select(Lease.item_id, Lease.id).where(Lease.voter_id == voter_id, Lease.item_id.in_(ids))  # type: ignore[attr-defined]
        ).all()
    )
    tokens = {item_id: secrets.token_urlsafe(24) for item_id in ids}
    taken = {item_id: lapsed[item_id] for item_id in ids if item_id in lapsed}
    table = _LEASES
    if taken:  # an LLM labeler taking back its own lapsed leases
        session.execute(
            update(table).where(table.c.id == bindparam("lease_id"))
            .values(token=bindparam("new_token"), state="active", expires_at=expires, created_at=now),
            [{"lease_id": taken[i], "new_token": tokens[i]} for i in taken],
        )
    created = utcnow()  # once the candidates are found (locked): a lease starts when it is taken
    rows = [{"project_id": project_id, "item_id": i, "voter_id": voter_id, "token": tokens[i], "state": "active",
             "is_human": human, "is_gold": gold, "created_at": created, "expires_at": expires}
            for i in ids if i not in taken]
    if gold:  # gold rows are not locked: the same annotator's concurrent request may win
        taken.update(_insert_each(session, rows))
    elif rows:  # the rows are locked (or the database is): all of them in one statement
        taken.update((int(i), int(lid)) for lid, i in session.execute(insert(table).returning(table.c.id, table.c.item_id), rows))
    return [Claim(lease_id=taken[i], token=tokens[i], item_id=i, expires_at=expires) for i in ids if i in taken]


def _insert_each(session: Session, rows: list[dict[str, Any]]) -> dict[int, int]:
    """Insert leases one by one, skipping those another transaction got first: item → lease id."""
    table = _LEASES
    out = {}
    for row in rows:
        try:
            with session.begin_nested():
                out[row["item_id"]] = int(session.execute(insert(table).returning(table.c.id), row).scalar_one())
        except IntegrityError:
            continue
    return out


def finish(session: Session, *, lease_id: int | None = None, lease_ids: Sequence[int] = ()) -> None:
    """Mark leases done (their votes are recorded): ``lease_id``, or many at once."""
    ids = [*lease_ids, *([] if lease_id is None else [lease_id])]
    if not ids:
        return
    session.execute(_FINISH, {"ids": ids})
    for i in ids if session.identity_map else ():  # a Lease the caller holds says so too
        held = session.identity_map.get(identity_key(Lease, i))
        if held is not None:
            set_committed_value(held, "state", "done")


_FINISH = update(_LEASES).where(_LEASES.c.id.in_(bindparam("ids", expanding=True))).values(state="done")


def release(session: Session, *, lease_ids: list[int]) -> None:
    """Give leases back early (a skipped task, an interrupted run): the items return to the pool."""
    if lease_ids:
        session.execute(
            update(Lease).where(Lease.id.in_(lease_ids), Lease.state == "active")  # type: ignore[attr-defined]
            .values(state="expired", expires_at=utcnow())
        )
