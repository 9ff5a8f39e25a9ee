"""What the dashboard measures beyond ``status.project_status``: throughput over the last hours,
agreement between human annotators, and a per-voter table with reliability and gold accuracy.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlmodel import Session, select

from llmlabel.decisions import voter_reliabilities
from llmlabel.projects import project_config
from llmlabel.quality.gating import gold_record
from llmlabel.schema import canonical_json
from llmlabel.status import ProjectStatus
from llmlabel.store.tables import Item, Project, Vote, Voter, utcnow

HUMAN_KINDS = ("human", "expert")
MAX_ALPHA_CELLS = 2_000_000  # voters × items of the reliability matrix krippendorff builds


@dataclass
class Throughput:
    hours: list[datetime]  # the start of each hour, oldest first
    human: list[int]
    machine: list[int]

    @property
    def total(self) -> int:
        return sum(self.human) + sum(self.machine)


def throughput(session: Session, *, project: Project, now: datetime | None = None, hours: int = 24) -> Throughput:
    """Votes per clock hour over the last ``hours`` (the current hour included), human vs machine."""
    now = now or utcnow()
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    rows = session.exec(
        select(Vote.created_at, Voter.kind)
        .join(Voter, Voter.id == Vote.voter_id)  # type: ignore[arg-type]
        .where(Vote.project_id == project.id, Vote.created_at >= start)
    ).all()
    human, machine = [0] * hours, [0] * hours
    for created, kind in rows:
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        slot = int((created - start).total_seconds() // 3600)
        if 0 <= slot < hours:
            (human if kind in HUMAN_KINDS else machine)[slot] += 1
    return Throughput([start + timedelta(hours=i) for i in range(hours)], human, machine)


@dataclass
class Agreement:
    final_items: int  # final items with at least two human answers
    unanimous: int  # ... on which every human answer was the same label
    alpha: float | None  # Krippendorff's alpha (nominal) over human answers on every item with two or more
    alpha_items: int
    note: str | None = None

    @property
    def share(self) -> float | None:
        return self.unanimous / self.final_items if self.final_items else None


def agreement(session: Session, *, project: Project) -> Agreement:
    rows = session.exec(
        select(Vote.item_id, Vote.voter_id, Vote.label, Item.status)
        .join(Voter, Voter.id == Vote.voter_id)  # type: ignore[arg-type]
        .join(Item, Item.id == Vote.item_id)  # type: ignore[arg-type]
        .where(Vote.project_id == project.id, Voter.kind.in_(HUMAN_KINDS), Vote.label.is_not(None))  # type: ignore[attr-defined]
    ).all()
    by_item: dict[int, dict[int, str]] = defaultdict(dict)
    final: set[int] = set()
    for item_id, voter_id, label, status in rows:
        by_item[item_id][voter_id] = canonical_json(label)
        if status == "final":
            final.add(item_id)
    shared = {i: answers for i, answers in by_item.items() if len(answers) >= 2}
    final_shared = [answers for i, answers in shared.items() if i in final]
    unanimous = sum(1 for answers in final_shared if len(set(answers.values())) == 1)
    alpha, note = _alpha(shared)
    return Agreement(len(final_shared), unanimous, alpha, len(shared), note)


def _alpha(shared: dict[int, dict[int, str]]) -> tuple[float | None, str | None]:
    if not shared:
        return None, "no item has two human answers yet"
    voters = sorted({v for answers in shared.values() for v in answers})
    if len(voters) * len(shared) > MAX_ALPHA_CELLS:
        return None, "too many annotators × items to compute alpha here"
    codes: dict[str, int] = {}
    data = np.full((len(voters), len(shared)), np.nan)
    row = {v: i for i, v in enumerate(voters)}
    for col, answers in enumerate(shared.values()):
        for voter, label in answers.items():
            data[row[voter], col] = codes.setdefault(label, len(codes))
    if len(codes) < 2:
        return 1.0, "every human answer so far is the same label"
    import krippendorff

    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")), None


@dataclass
class VoterRow:
    name: str
    kind: str
    state: str
    votes: int
    abstentions: int
    cost_usd: float
    reliability: float | None  # P(correct) from the current consensus fit, when there is one
    gold_correct: int
    gold_total: int

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_total if self.gold_total else None


def voter_rows(session: Session, *, project: Project, status: ProjectStatus) -> list[VoterRow]:
    ids = dict(session.exec(select(Voter.name, Voter.id).where(Voter.project_id == project.id)).all())
    reliability = voter_reliabilities(session, project=project, config=project_config(session, project=project))
    out = []
    for v in status.voters:
        voter_id: Any = ids.get(v.name)
        record = gold_record(session, voter_id=voter_id)
        out.append(VoterRow(v.name, v.kind, v.state, v.votes, v.abstentions, v.cost_usd,
                            reliability.get(voter_id), record.correct, record.total))
    return out
