"""Annotators are gated by measured quality on hidden gold, not by trust.

Accuracy is judged by its lower confidence bound (Wilson, one-sided 95%), so a new annotator
with 3 of 3 right is not yet "excellent" and one with 40 of 60 right is not rescued by luck.
The gold rate rises for an annotator whose recent gold accuracy dips, so a slipping
annotator is measured more often before the bound crosses the bar.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Text, bindparam, case, cast, func, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from llmlabel.config import Policy
from llmlabel.quality.intervals import wilson_interval
from llmlabel.schema import canonical_json
from llmlabel.store.prepared import Prepared
from llmlabel.store.tables import Gold, Vote, Voter

RECENT = 10


@dataclass(frozen=True)
class GoldRecord:
    correct: int
    total: int
    recent: tuple[bool, ...]  # newest last

    @property
    def lower_bound(self) -> float:
        return wilson_lower_bound(self.correct, self.total)


def wilson_lower_bound(correct: int, total: int) -> float:
    """One-sided 95% lower bound: the low end of the two-sided 90% Wilson interval."""
    return wilson_interval(correct, total, confidence=0.90).low if total else 0.0


def _gold_answers(*columns: Any) -> Select[Any]:
    """A voter's answers to gold (not abstentions), read through the index of those alone."""
    return (select(*columns).select_from(Vote).join(Gold, col(Gold.item_id) == Vote.item_id)
            .where(col(Vote.voter_id) == bindparam("voter_id"), col(Vote.on_gold), col(Vote.label).is_not(None)))


# Stored by one JSON encoder, equal texts are equal labels; answers whose text differs from the
# gold's are mostly wrong ones, decoded and compared canonically. So a request decodes the
# wrong answers and the last few, not every gold answer the voter ever gave (it runs on every
# task request: ~11 us a decoded row here, and an annotator answers thousands of gold tasks).
_SAME_TEXT = cast(Vote.label, Text) == cast(Gold.label, Text)
_GOLD_TALLY = Prepared(_gold_answers(func.count(), func.coalesce(func.sum(case((_SAME_TEXT, 1), else_=0)), 0)))
_GOLD_DIFFERENT = Prepared(_gold_answers(Vote.label, Gold.label).where(~_SAME_TEXT))
_GOLD_RECENT = Prepared(_gold_answers(Vote.label, Gold.label).order_by(col(Vote.id).desc()).limit(RECENT))


def gold_record(session: Session, *, voter_id: int) -> GoldRecord:
    params = {"voter_id": voter_id}
    total, same = _GOLD_TALLY.first(session, params) or (0, 0)
    if not total:
        return GoldRecord(0, 0, ())
    correct = int(same) + sum(canonical_json(v) == canonical_json(g) for v, g in _GOLD_DIFFERENT.all(session, params))
    return GoldRecord(correct, int(total), recent_gold(session, voter_id=voter_id))


def recent_gold(session: Session, *, voter_id: int) -> tuple[bool, ...]:
    """Whether each of the voter's last gold answers was right, newest last: all that the
    gold rate of a task request needs (one query, where the whole record takes three)."""
    rows = _GOLD_RECENT.all(session, {"voter_id": voter_id})
    return tuple(reversed([canonical_json(v) == canonical_json(g) for v, g in rows]))


def gold_rate(recent: tuple[bool, ...], policy: Policy) -> float:
    """Base rate, raised while the recent gold accuracy is under the bar."""
    if len(recent) >= 3 and sum(recent) / len(recent) < policy.quality_bar:
        return _raised_rate(policy)
    return policy.gold_rate


def _raised_rate(policy: Policy) -> float:
    """The base rate doubled: at least 0.2, at most 0.5, never under the base rate."""
    return max(policy.gold_rate, min(0.5, max(2 * policy.gold_rate, 0.2)))


def wants_gold(session: Session, *, voter_id: int, policy: Policy) -> bool:
    """Whether this task request gets a gold task, at the voter's gold rate. The draw comes
    first: under the base rate it is gold and at or over the raised rate it is not, whatever
    the voter's record, so only the draws in between read it (a query on every task request
    otherwise)."""
    draw = random.random()
    if draw < policy.gold_rate:
        return True
    if draw >= _raised_rate(policy):
        return False
    return draw < gold_rate(recent_gold(session, voter_id=voter_id), policy)


def next_status(status: str, record: GoldRecord, policy: Policy) -> str:
    """Where a human voter stands after its latest gold answer.

    Qualification is a sequential test on gold only: at least ``qualification_tasks``
    answers, passed once the lower bound clears the bar, failed once even the upper bound
    is under it (or after long enough without clearing it). A qualified
    annotator is gated as soon as the lower bound over all its gold falls under the bar.
    """
    bar = policy.quality_bar
    if status == "qualifying":
        if record.total < policy.qualification_tasks:
            return "qualifying"
        if record.lower_bound >= bar:
            return "active"
        upper = 1 - wilson_lower_bound(record.total - record.correct, record.total)
        if upper < bar or record.total >= max(4 * policy.qualification_tasks, 2 * min_evidence(bar)):
            return "gated"
        return "qualifying"
    if status == "active" and record.total >= min_evidence(bar) and record.lower_bound < bar:
        return "gated"
    return status


def min_evidence(bar: float) -> int:
    """The fewest gold answers whose perfect record clears the bar: judging earlier would gate
    everyone, however good."""
    n = 1
    while wilson_lower_bound(n, n) < bar and n < 1000:
        n += 1
    return n


def set_status(session: Session, *, voter: Voter, status: str) -> None:
    """Store a voter's new standing (and show it on the object the caller holds)."""
    _SET_STATUS.run(session, {"voter_id": voter.id, "status": status})
    set_committed_value(voter, "status", status)


_SET_STATUS = Prepared(update(Voter).where(col(Voter.id) == bindparam("voter_id")).values(status=bindparam("status")))
