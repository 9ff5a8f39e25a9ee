"""Recording votes: the one write path for human, expert and LLM votes alike.

The database's unique (item, voter) constraint makes a vote idempotent: recording the same
voter's vote on an item twice (a replayed request, a resumed LLM run) stores it once and
keeps the first one, so no retry path can double-count evidence. The insert says so itself
(``ON CONFLICT (item_id, voter_id) DO NOTHING … RETURNING``, on SQLite ≥ 3.35 and PostgreSQL),
so a batch of votes is one statement and ``items.vote_count`` grows only by the rows that
were actually inserted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, col, select

from llmlabel.errors import StorageError
from llmlabel.store.prepared import Prepared, dialect_name
from llmlabel.store.tables import Gold, Item, Vote, utcnow


@dataclass
class VoteInput:
    label: Any  # canonical label (see llmlabel.schema); None = abstention
    abstain_reason: str | None = None
    confidence: float | None = None
    confidence_method: str | None = None  # logprobs | samples | verbalized | human
    probs: list[float] | None = None
    rationale: str | None = None
    latency_ms: float | None = None
    cost_usd: float = 0.0
    prompt_version: str | None = None
    unsure: bool = False
    comment: str | None = None
    predicted_distribution: dict[str, float] | None = None


@dataclass(frozen=True)
class NewVote:
    """One vote to record: whose, on which item, and what."""

    item_id: int
    voter_id: int
    vote: VoteInput


def record_votes(
    session: Session, *, project_id: int, votes: Sequence[NewVote], gold: Collection[int] | None = None,
) -> dict[tuple[int, int], int]:
    """Store votes in one statement; returns {(item_id, voter_id): vote id} of those inserted.
    A vote whose voter already voted on the item (earlier, or earlier in ``votes``) is skipped.
    ``gold``: which of the votes' items have gold, when the caller read that in this
    transaction already (an annotator's vote reads it with the lease); else it is looked up."""
    if not votes:
        return {}
    session.flush()  # the caller's pending rows (an item, a voter) first: the votes refer to them
    now = utcnow()
    if gold is None:
        gold = set(_GOLD_AMONG.scalars(session, {"ids": list({v.item_id for v in votes})}))
    rows = [{"project_id": project_id, "item_id": v.item_id, "voter_id": v.voter_id, "created_at": now,
             "on_gold": v.item_id in gold, **v.vote.__dict__} for v in votes]
    created = {(int(item), int(voter)): int(vid) for vid, item, voter in _insert(session).returning(session, rows)}
    per_item = Counter(item for item, _ in created)  # new votes per item: one UPDATE per distinct count
    for n in sorted(set(per_item.values())):
        ids = [item for item, k in per_item.items() if k == n]
        _COUNT.run(session, {"ids": ids, "n": n, "now": now})
        for item in ids:  # an Item the caller holds sees its new count, as an ORM update would show it
            held = session.identity_map.get(identity_key(Item, item)) if session.identity_map else None
            if held is not None:
                set_committed_value(held, "vote_count", held.vote_count + n)
                set_committed_value(held, "updated_at", now)
    return created


def mark_gold_answers(session: Session, *, item_ids: Sequence[int]) -> None:
    """The votes already cast on items that have just become gold are answers to gold now.

    Stored with each vote (``votes.on_gold``) so that gating reads a voter's gold answers
    through an index of those alone. On PostgreSQL a vote committed at the very moment its
    item becomes gold can miss both this and the vote's own check, and stays unflagged."""
    for start in range(0, len(item_ids), 500):
        _MARK_GOLD.run(session, {"ids": list(item_ids[start:start + 500])})


_VOTES = Vote.__table__  # type: ignore[attr-defined]
_ITEMS = Item.__table__  # type: ignore[attr-defined]
_GOLD_AMONG = Prepared(select(col(Gold.item_id)).where(col(Gold.item_id).in_(bindparam("ids", expanding=True))))
_MARK_GOLD = Prepared(update(_VOTES).where(_VOTES.c.item_id.in_(bindparam("ids", expanding=True)), ~_VOTES.c.on_gold)
                      .values(on_gold=True))
_COUNT = Prepared(
    update(_ITEMS).where(_ITEMS.c.id.in_(bindparam("ids", expanding=True)))
    .values(vote_count=_ITEMS.c.vote_count + bindparam("n"), updated_at=bindparam("now"))
)
_INSERTS = {
    name: Prepared(dialect.insert(_VOTES).on_conflict_do_nothing(index_elements=["item_id", "voter_id"])
                   .returning(_VOTES.c.id, _VOTES.c.item_id, _VOTES.c.voter_id))
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}


def _insert(session: Session) -> Prepared:
    name = dialect_name(session)
    if name not in _INSERTS:
        raise StorageError(f"unsupported database {name!r}: use SQLite or PostgreSQL")
    return _INSERTS[name]


def record_vote(
    session: Session, *, project_id: int, item_id: int, voter_id: int, vote: VoteInput
) -> tuple[Vote, bool]:
    """Store a vote; returns (vote, created). A second vote by the same voter returns the first."""
    created = record_votes(session, project_id=project_id, votes=[NewVote(item_id, voter_id, vote)])
    if created:
        row = session.get(Vote, created[item_id, voter_id])
        assert row is not None
        return row, True
    existing = session.exec(select(Vote).where(Vote.item_id == item_id, Vote.voter_id == voter_id)).one()
    return existing, False
