"""Where a project stands: items per status, gold, and votes per voter."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlmodel import Session, col

from llmlabel.store.tables import Gold, Item, LLMCall, Project, Vote, Voter


@dataclass
class VoterStatus:
    name: str
    kind: str
    state: str
    votes: int
    abstentions: int
    cost_usd: float


@dataclass
class ProjectStatus:
    project: str
    config_hash: str
    items: int
    by_status: dict[str, int]
    gold: int
    votes: int
    llm_cost_usd: float
    voters: list[VoterStatus] = field(default_factory=list)


def project_status(session: Session, *, project: Project) -> ProjectStatus:
    by_status = dict(
        session.execute(
            select(col(Item.status), func.count()).where(col(Item.project_id) == project.id).group_by(col(Item.status))
        ).all()
    )
    gold = session.execute(select(func.count()).select_from(Gold).where(col(Gold.project_id) == project.id)).scalar_one()
    voter_rows = session.execute(
        select(
            col(Voter.name), col(Voter.kind), col(Voter.status), func.count(col(Vote.id)),
            func.count(col(Vote.id)).filter(col(Vote.label).is_(None)),
            func.coalesce(func.sum(col(Vote.cost_usd)), 0.0),
        )
        .outerjoin(Vote, col(Vote.voter_id) == Voter.id)
        .where(col(Voter.project_id) == project.id)
        .group_by(col(Voter.id), col(Voter.name), col(Voter.kind), col(Voter.status))
        .order_by(col(Voter.kind), col(Voter.name))
    ).all()
    cost = session.execute(
        select(func.coalesce(func.sum(col(LLMCall.cost_usd)), 0.0)).where(col(LLMCall.project_id) == project.id)
    ).scalar_one()
    voters = [VoterStatus(n, k, s, int(v), int(a), float(c)) for n, k, s, v, a, c in voter_rows]
    return ProjectStatus(
        project=project.name,
        config_hash=project.config_hash,
        items=sum(by_status.values()),
        by_status={s: int(by_status.get(s, 0)) for s in ("open", "final", "escalated")},
        gold=int(gold),
        votes=sum(v.votes for v in voters),
        llm_cost_usd=float(cost),
        voters=voters,
    )
