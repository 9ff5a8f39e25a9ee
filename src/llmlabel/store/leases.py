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

import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, col

from llmlabel.store.prepared import Prepared, dialect_name
from llmlabel.store.tables import Gold, Item, Lease, Vote, utcnow

_LEASES: Table = Lease.__table__  # type: ignore[attr-defined]  # SQLModel's stubs do not declare __table__
HUMAN_KINDS = ("human", "expert")
RECHECK_ROUNDS = 5
WINDOW = 64


@dataclass(frozen=True)
class Claim:
    lease_id: int
    token: str
    item_id: int
    expires_at: datetime


def _none_of(table: Any, *where: Any) -> ColumnElement[bool]:
    """No row of ``table`` (at most one: votes and leases are unique per item and voter) meets
    ``where``.

    A count, not NOT EXISTS: PostgreSQL plans a NOT EXISTS as an anti-join and, given one
    voter's rows to match, may read all of them for every claim; with fresh statistics it read
    all 400 leases of a voter who had 400 (tests/api/test_tasks.py), and under load it did so
    for the votes too (figures in ``store.db.refresh_statistics``). A count is a probe of the
    (item, voter) index per candidate, on either database, once statistics show the table is
    not tiny (which ``refresh_statistics`` sees to on PostgreSQL).
    """
    return select(func.count()).select_from(table).where(*where).scalar_subquery() == 0


def _eligible(*, voter_id: Any, human: bool, now: Any, gold: bool) -> list[Any]:
    """The conditions an item (of the project) must meet to be leased to this voter now; a
    gold task's are on the gold row's item (the pick walks the gold table).

    For an annotator, the item's live leases are judged first and the rest only if it passes:
    under load the head of the queue is what other annotators hold, and each such item then
    costs one probe, not three. Written as a CASE, since PostgreSQL orders a filter's
    conditions by its estimate of their cost (it put the lease count last)."""
    item = col(Gold.item_id) if gold else col(Item.id)
    not_voted = _none_of(Vote, col(Vote.item_id) == item, col(Vote.voter_id) == voter_id)
    own_lease = col(Lease.item_id) == item
    if human:
        not_leased_before = _none_of(Lease, own_lease, col(Lease.voter_id) == voter_id)
    else:
        not_leased_before = _none_of(
            Lease, own_lease, col(Lease.voter_id) == voter_id,
            or_(col(Lease.state) == "done", and_(col(Lease.state) == "active", col(Lease.expires_at) > now)),
        )
    if gold:  # a gold task: any gold item, whatever its status
        return [not_voted, not_leased_before]
    if human:
        live_human_leases = (
            select(func.count())
            .select_from(Lease)
            .where(col(Lease.item_id) == Item.id, col(Lease.state) == "active", col(Lease.expires_at) > now, col(Lease.is_human))
            .scalar_subquery()
        )
        return [col(Item.status) == "open",
                case((live_human_leases < Item.votes_needed, and_(not_voted, not_leased_before)), else_=false())]
    # machines also answer every gold item: that is how their reliability is measured
    return [not_voted, not_leased_before, or_(col(Item.status) == "open", exists().where(col(Gold.item_id) == Item.id))]


@dataclass(frozen=True)
class _Pick:
    """The statements of one kind of claim, built once (building them costs more than running
    them): ``pick`` the first ``limit`` eligible items in queue order; on PostgreSQL, ``locked``
    the same with row locks, past the ``passed`` items, and ``recheck`` the locked ones."""

    pick: Prepared
    locked: Prepared
    recheck: Prepared


@cache
def _statements(human: bool, limit: int, scope: str) -> _Pick:
    """``scope``: "project" (every item of ``project_id``); the open items after a cursor
    (``priority``, ``after``): "open_same" (its priority, larger ids) and "open_below" (lower
    priorities); "span" (the open items of priority ``top`` with ids from ``first`` to
    ``last``); or "ids" (the ``ids`` of a window of the queue, the project's already). Each
    but "project" and "ids" is a range of an index walked in queue order, so the conditions
    are judged item by item and the walk stops at the ``limit``-th eligible item. "ids" has
    every item judged and then sorted: an order no index serves, lest the planner walk the
    queue index through every open item to find the named ones."""
    conditions = _eligible(voter_id=bindparam("voter_id"), human=human, now=bindparam("now"), gold=False)
    in_project = col(Item.project_id) == bindparam("project_id")
    is_open = col(Item.status) == "open"
    priority, item_id = col(Item.priority), col(Item.id)
    scopes: dict[str, list[Any]] = {
        "project": [in_project],
        "open_same": [in_project, is_open, priority == bindparam("priority"), item_id > bindparam("after")],
        "open_below": [in_project, is_open, priority < bindparam("priority")],
        "span": [in_project, is_open, priority == bindparam("top"), item_id >= bindparam("first"),
                 item_id <= bindparam("last")],
        "ids": [item_id.in_(bindparam("ids", expanding=True))],
    }
    where = scopes[scope]
    order: tuple[Any, ...] = (-priority, item_id) if scope == "ids" else (priority.desc(), item_id)
    pick = select(item_id).where(*where, *conditions).order_by(*order).limit(limit)
    locked = (pick.where(item_id.not_in(bindparam("passed", expanding=True)))
              .with_for_update(of=Item, skip_locked=True))
    recheck = select(item_id).where(item_id.in_(bindparam("locked", expanding=True)), *conditions)
    return _Pick(Prepared(pick), Prepared(locked), Prepared(recheck))


@cache
def _gold_picks(limit: int) -> tuple[Prepared, Prepared]:
    """The first eligible gold items from a pivot on, and before it. Walking the gold table
    from a random pivot spreads annotators over the gold as a random order would, without
    judging every gold item first (ORDER BY random() did: ~8 ms a pick with 400 gold items)."""
    conditions = _eligible(voter_id=bindparam("voter_id"), human=True, now=bindparam("now"), gold=True)
    base = select(col(Gold.item_id)).where(col(Gold.project_id) == bindparam("project_id"), *conditions)
    return (Prepared(base.where(col(Gold.item_id) >= bindparam("pivot")).order_by(col(Gold.item_id)).limit(limit)),
            Prepared(base.where(col(Gold.item_id) < bindparam("pivot")).order_by(col(Gold.item_id)).limit(limit)))


# two subqueries: SQLite reads a lone min() or max() off the index's end, both in one SELECT
# by scanning every gold row of the project (325 us with 4,000 gold items, against 4.5 us)
_GOLD_ENDS = [select(f(Gold.item_id)).where(col(Gold.project_id) == bindparam("project_id")).scalar_subquery()
              for f in (func.min, func.max)]
_GOLD_RANGE = Prepared(select(*_GOLD_ENDS))


def _gold_candidates(session: Session, params: dict[str, Any], limit: int) -> list[int]:
    lo, hi = _GOLD_RANGE.first(session, params) or (None, None)
    if lo is None:
        return []
    after, before = _gold_picks(limit)
    pivot = {**params, "pivot": random.randint(lo, hi)}
    found = after.scalars(session, pivot)
    return found if len(found) == limit else found + before.scalars(session, pivot)[:limit - len(found)]


_ORDER = (col(Item.priority).desc(), col(Item.id))
_QUEUE = select(col(Item.id), col(Item.priority)).where(col(Item.project_id) == bindparam("project_id"), col(Item.status) == "open")
_WINDOW_FIRST = Prepared(_QUEUE.order_by(*_ORDER).limit(WINDOW))
_WINDOW_AFTER = Prepared(_QUEUE.where(  # the next window: after the last item of the previous one
    or_(col(Item.priority) < bindparam("priority"), and_(col(Item.priority) == bindparam("priority"), col(Item.id) > bindparam("after")))
).order_by(*_ORDER).limit(WINDOW))


_LAPSED = Prepared(select(_LEASES.c.item_id, _LEASES.c.id)
                   .where(_LEASES.c.voter_id == bindparam("voter_id"), _LEASES.c.item_id.in_(bindparam("ids", expanding=True))))
_TAKE_BACK = Prepared(update(_LEASES).where(_LEASES.c.id == bindparam("lease_id")).values(
    token=bindparam("new_token"), state="active", expires_at=bindparam("expires"), created_at=bindparam("created")))
_INSERT = Prepared(insert(_LEASES).returning(_LEASES.c.id, _LEASES.c.item_id))


def _candidates(
    session: Session, *, project_id: int, voter_id: int, human: bool, limit: int, now: datetime,
    gold: bool = False, after: tuple[float, int] | None = None,
) -> list[int]:
    params: dict[str, Any] = {"project_id": project_id, "voter_id": voter_id, "now": now}
    if gold:
        return _gold_candidates(session, params, limit)
    if not human:
        if after is None:
            return _first(session, _statements(human, limit, "project"), params)
        # the open items after the cursor: two ranges of the queue index
        keyset = {**params, "priority": after[0], "after": after[1]}
        found = _first(session, _statements(human, limit, "open_same"), keyset)
        if len(found) < limit:
            found += _first(session, _statements(human, limit - len(found), "open_below"), keyset)
        return found
    # An annotator's task: the queue is walked a window at a time, so that a claim with nothing
    # for this annotator near the head judges WINDOW items per statement, not every open item.
    # Most open items share one priority (nobody has voted on them yet), and within the
    # window's first priority the judging stops at the first eligible item: under load the
    # head of the queue is what other annotators hold. The rest of the window, if it comes to
    # that, is judged whole.
    window = _WINDOW_FIRST.all(session, params)
    while window:
        top = window[0][1]
        head = [i for i, priority in window if priority == top]
        found = _first(session, _statements(True, limit, "span"),
                       {**params, "top": top, "first": head[0], "last": head[-1]})
        if not found and len(head) < len(window):
            found = _first(session, _statements(True, limit, "ids"), {**params, "ids": [i for i, _ in window[len(head):]]})
        if found or len(window) < WINDOW:
            return found
        window = _WINDOW_AFTER.all(session, {**params, "priority": window[-1][1], "after": window[-1][0]})
    return []


def _first(session: Session, statements: _Pick, params: dict[str, Any]) -> list[int]:
    """The first eligible items in queue order, locked on PostgreSQL."""
    if dialect_name(session) != "postgresql":
        return statements.pick.scalars(session, params)
    # The locking statement judges rows on its snapshot; it may reach a row just after another
    # claimer committed a lease on it (a row lock alone does not make PostgreSQL re-read the
    # leases). Once the rows are ours, judge them again in a new statement, which sees every
    # lease committed before we locked them; if none is still free, look further down.
    passed: list[int] = []
    for _ in range(RECHECK_ROUNDS):
        locked = statements.locked.scalars(session, {**params, "passed": passed})
        if not locked:
            return []
        still = set(statements.recheck.scalars(session, {**params, "locked": locked}))
        if still:
            return [i for i in locked if i in still]
        passed.extend(locked)
    return []


def claim(
    session: Session,
    *,
    project_id: int,
    voter_id: int,
    human: bool,
    limit: int,
    lease_seconds: int,
    gold: bool = False,
    after: tuple[float, int] | None = None,
) -> list[Claim]:
    """Lease up to ``limit`` items to a voter, highest priority first; with ``gold``, a
    random gold item instead, whatever its status.

    ``after``: an LLM labeler's cursor, the (priority, id) of the last item it claimed; only
    open items after it in queue order are considered. Without a cursor a machine claim judges
    every item of the project (gold items whatever their status, so no index gives the order):
    ~7 ms of each claim's 13 with 10,000 items, profiled, every claim of a run alike. A labeler that walks on from
    its cursor and walks once more from the top when that finds nothing (``labelers.runner``)
    claims what the cursor passed (an item reopened, a lease of a dead process that lapsed, a
    decided gold item) at the end."""
    now = utcnow()
    expires = now + timedelta(seconds=lease_seconds)
    ids = _candidates(session, project_id=project_id, voter_id=voter_id, human=human, limit=limit, now=now,
                      gold=gold, after=after)
    if not ids:
        return []
    lapsed: dict[int, int] = {} if human else dict(  # an annotator is never offered an item leased to it before
        _LAPSED.all(session, {"voter_id": voter_id, "ids": ids}))  # (item id, lease id) rows
    tokens = {item_id: secrets.token_urlsafe(24) for item_id in ids}
    taken = {item_id: lapsed[item_id] for item_id in ids if item_id in lapsed}
    created = utcnow()  # once the candidates are found (locked): a lease starts when it is taken
    if taken:  # an LLM labeler taking back its own lapsed leases
        _TAKE_BACK.run_many(session, [{"lease_id": taken[i], "new_token": tokens[i], "expires": expires, "created": created}
                                      for i in taken])
    rows = [{"project_id": project_id, "item_id": i, "voter_id": voter_id, "token": tokens[i], "state": "active",
             "is_human": human, "is_gold": gold, "created_at": created, "expires_at": expires}
            for i in ids if i not in taken]
    if gold:  # gold rows are not locked: the same annotator's concurrent request may win
        taken.update(_insert_each(session, rows))
    elif rows:  # the rows are locked (or the database is): all of them in one statement
        taken.update((int(i), int(lid)) for lid, i in _INSERT.returning(session, rows))
    return [Claim(lease_id=taken[i], token=tokens[i], item_id=i, expires_at=expires) for i in ids if i in taken]


def _insert_each(session: Session, rows: list[dict[str, Any]]) -> dict[int, int]:
    """Insert leases one by one, skipping those another transaction got first: item → lease id."""
    out = {}
    for row in rows:
        try:
            with session.begin_nested():
                out[row["item_id"]] = int(_INSERT.all(session, row)[0][0])
        except IntegrityError:
            continue
    return out


def finish(session: Session, *, lease_ids: Sequence[int]) -> None:
    """Mark leases done (their votes are recorded)."""
    if not lease_ids:
        return
    _FINISH.run(session, {"ids": list(lease_ids)})
    for i in lease_ids if session.identity_map else ():  # a Lease the caller holds says so too
        held = session.identity_map.get(identity_key(Lease, i))
        if held is not None:
            set_committed_value(held, "state", "done")


_FINISH = Prepared(update(_LEASES).where(_LEASES.c.id.in_(bindparam("ids", expanding=True))).values(state="done"))
_RELEASE = Prepared(update(_LEASES).where(_LEASES.c.id.in_(bindparam("ids", expanding=True)), _LEASES.c.state == "active")
                    .values(state="expired", expires_at=bindparam("now")))


def release(session: Session, *, lease_ids: list[int]) -> None:
    """Give leases back early (a skipped task, an interrupted run): the items return to the pool."""
    if lease_ids:
        _RELEASE.run(session, {"ids": list(lease_ids), "now": utcnow()})
