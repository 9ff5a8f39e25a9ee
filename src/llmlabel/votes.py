"""Recording a vote: the one write path for human, expert and LLM votes alike.

The database's unique (item, voter) constraint makes a vote idempotent: recording the same
voter's vote on an item twice (a replayed request, a resumed LLM run) stores it once and
returns the first one, so no retry path can double-count evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from llmlabel.store.tables import Item, Vote, utcnow


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


def record_vote(
    session: Session, *, project_id: int, item_id: int, voter_id: int, vote: VoteInput
) -> tuple[Vote, bool]:
    """Store a vote; returns (vote, created). A second vote by the same voter returns the first."""
    row = Vote(project_id=project_id, item_id=item_id, voter_id=voter_id, **vote.__dict__)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        existing = session.exec(select(Vote).where(Vote.item_id == item_id, Vote.voter_id == voter_id)).one()
        return existing, False
    session.execute(
        update(Item)
        .where(Item.id == item_id)  # type: ignore[arg-type]
        .values(vote_count=Item.vote_count + 1, updated_at=utcnow())
    )
    return row, True
