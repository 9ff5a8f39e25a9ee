"""The decision policy: finalize, ask one more voter, or escalate — as a pure function.

Why expected information gain per unit cost: the question for an undecided item is which
*kind* of voter to buy next. A kind's pooled confusion matrix says how its vote would move the
posterior; the expected drop in entropy measures how much a vote is worth before we see it, and
dividing by the kind's cost turns it into value for money. With typical costs this asks a cheap
LLM first, a human once LLMs are spent or uninformative, and an expert last, without a
hand-written ladder. Kinds that cannot vote on an item (every LLM already did) are excluded.

Escalation is early when two confident voters contradict each other: more cheap votes rarely
settle a disagreement between reliable sources, and a reviewer's answer becomes gold.

"Finalize at posterior ≥ target" is a threshold on whatever posteriors it is given; it is the
calibration for the policy (``calibrate`` with vote prefixes, whose ``StoppingRule`` reads the
first crossing) that makes the target hold for the items it finalizes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from .errors import ConsensusInputError
from .votes import ABSTAIN, BoolArray, FloatArray, IntArray, VoterKinds, Votes


class Decision(IntEnum):
    FINAL = 0
    MORE = 1
    ESCALATE = 2


def _default_costs() -> dict[str, float]:
    return {"model": 0.001, "llm": 0.01, "human": 1.0, "expert": 5.0}


@dataclass(frozen=True)
class Policy:
    target: float = 0.97
    min_human_votes: int = 1
    max_votes: int = 7
    costs: Mapping[str, float] = field(default_factory=_default_costs)
    conflict_threshold: float = 0.9
    human_kinds: tuple[str, ...] = ("human", "expert")

    def __post_init__(self) -> None:
        if not 0.5 <= self.target < 1.0:
            raise ConsensusInputError(f"policy target must be in [0.5, 1), got {self.target}")
        if self.min_human_votes < 0 or self.max_votes < 1:
            raise ConsensusInputError("min_human_votes must be ≥ 0 and max_votes ≥ 1")
        if any(c <= 0 for c in self.costs.values()):
            raise ConsensusInputError("every cost in the policy must be positive")


@dataclass(frozen=True)
class Decisions:
    """One row per item. ``next_kind`` is a kind code (−1 when no vote is asked for)."""

    code: IntArray
    label: IntArray
    confidence: FloatArray
    next_kind: IntArray
    decided_by: NDArray[np.str_]
    reason: NDArray[np.str_]


def _entropy(p: FloatArray, axis: int = -1) -> FloatArray:
    out: FloatArray = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=axis)
    return out


def expected_information_gain(posteriors: FloatArray, matrices: FloatArray) -> FloatArray:
    """(n_items, n_kinds): expected entropy drop (nats) from one more vote of each kind."""
    joint = np.einsum("nk,ckj->ncjk", posteriors, matrices)  # p(true=k, said=j)
    said = joint.sum(axis=3)
    after = joint / np.where(said > 0, said, 1.0)[..., None]
    expected = np.sum(said * _entropy(after), axis=2)
    out: FloatArray = np.maximum(_entropy(posteriors)[:, None] - expected, 0.0)
    return out


def votes_by_kind(votes: Votes, kinds: VoterKinds) -> IntArray:
    """(n_items, n_kinds) counts of cast votes."""
    cast = votes.label != ABSTAIN
    nk = len(kinds.names)
    idx = votes.item[cast] * nk + kinds.kind[votes.voter[cast]]
    return np.bincount(idx, minlength=votes.n_items * nk).reshape(votes.n_items, nk)


def availability(votes: Votes, kinds: VoterKinds) -> BoolArray:
    """(n_items, n_kinds): whether some voter of the kind has not yet voted on the item.

    Abstentions count as having voted: asking the same voter again would not help.
    """
    nk = len(kinds.names)
    pool = np.bincount(kinds.kind[: votes.n_voters], minlength=nk)
    pairs = np.unique(votes.item * votes.n_voters + votes.voter)
    item, voter = pairs // votes.n_voters, pairs % votes.n_voters
    used = np.bincount(item * nk + kinds.kind[voter], minlength=votes.n_items * nk)
    out: BoolArray = used.reshape(votes.n_items, nk) < pool[None, :]
    return out


def find_conflicts(votes: Votes, reliability: FloatArray, threshold: float) -> BoolArray:
    """Items where two votes, each reliable at ≥ threshold, name different labels."""
    strong = (votes.label != ABSTAIN) & (np.nan_to_num(reliability) >= threshold)
    pairs = np.unique(votes.item[strong] * votes.n_classes + votes.label[strong])
    n_labels = np.bincount(pairs // votes.n_classes, minlength=votes.n_items)
    out: BoolArray = n_labels >= 2
    return out


def decide(
    posteriors: FloatArray,
    counts: IntArray,
    matrices: FloatArray,
    kind_names: tuple[str, ...],
    policy: Policy,
    *,
    available: BoolArray | None = None,
    conflict: BoolArray | None = None,
) -> Decisions:
    """Apply the policy to every item: (posteriors, votes so far by kind) → decisions.

    ``available[i, c]`` says whether kind c can still vote on item i (default: every kind);
    ``conflict`` marks items with contradicting confident votes (see ``find_conflicts``).
    """
    n, _ = posteriors.shape
    n_kinds = len(kind_names)
    if counts.shape != (n, n_kinds) or matrices.shape[0] != n_kinds:
        raise ConsensusInputError("counts and matrices must have one column/row per voter kind")
    label = posteriors.argmax(axis=1)
    conf = posteriors.max(axis=1)
    is_human = np.array([k in policy.human_kinds for k in kind_names])
    human = counts[:, is_human].sum(axis=1)
    total = counts.sum(axis=1)
    enough_humans = human >= policy.min_human_votes
    reached = conf >= policy.target
    final = reached & enough_humans

    cost = np.array([policy.costs.get(k, 1.0) for k in kind_names])
    allowed = np.ones((n, n_kinds), dtype=bool) if available is None else available.copy()
    allowed &= ~(reached & ~enough_humans)[:, None] | is_human[None, :]
    score = np.where(allowed, expected_information_gain(posteriors, matrices) / cost, -np.inf)
    best = score.argmax(axis=1)
    none_left = ~allowed.any(axis=1)
    contested = np.zeros(n, dtype=bool) if conflict is None else conflict
    spent = total >= policy.max_votes

    code = np.full(n, Decision.MORE, dtype=np.int64)
    reason = np.full(
        n, "posterior below target: asking the best value-for-cost voter kind", dtype=object
    )
    reason[reached & ~enough_humans] = "posterior reached target: waiting for a human vote"
    for mask, text in (
        (none_left, "no voter kind left for this item"),
        (spent, "vote budget spent"),
        (contested, "confident voters disagree"),
    ):
        code[mask & ~final] = Decision.ESCALATE
        reason[mask & ~final] = text
    code[final] = Decision.FINAL
    reason[final] = "posterior reached target"
    decided_by = np.where(final, np.where(human > 0, "consensus", "auto"), "")
    next_kind = np.where(code == Decision.MORE, best, -1)
    return Decisions(
        code=code,
        label=label,
        confidence=conf,
        next_kind=next_kind.astype(np.int64),
        decided_by=decided_by.astype(np.str_),
        reason=reason.astype(np.str_),
    )
