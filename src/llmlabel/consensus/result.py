"""One call from a vote table to decisions, for the service layer.

The steps stay separately usable (fit, calibrate, decide); this is the order they are meant to
run in, so that callers do not re-derive it: damp correlated voters measured on gold, fit,
measure calibration on held-out gold and repair it, then apply the policy to the calibrated
posteriors. Calibration is fitted on the posterior after every vote of random vote orders as
well as after all of them, because a live item is decided part-way through its votes, and
it carries the stopping rule measured on those orders, because a live item is finalized at
the first vote that reaches the target (see stopping.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calibration import CalibrationReport, calibrate, cast_vote_counts
from .correlation import correlation_weights
from .dawid_skene import DawidSkene
from .policy import Decisions, Policy, availability, decide, find_conflicts, votes_by_kind
from .votes import BoolArray, FloatArray, Gold, VoterKinds, Votes


@dataclass(frozen=True)
class ConsensusResult:
    """Everything the engine concluded about one vote table."""

    posteriors: FloatArray  # calibrated, gold clamped; what decisions are made on
    raw_posteriors: FloatArray  # straight from the model
    confusion: FloatArray  # (n_voters, n_bands, K, K)
    kind_confusion: FloatArray  # (n_kinds, n_bands, K, K)
    class_prior: FloatArray
    weights: FloatArray  # tempering exponent per voter (1 = independent)
    calibration: CalibrationReport | None  # None when gold was too small to measure
    decisions: Decisions
    model: DawidSkene


def run_consensus(
    votes: Votes,
    gold: Gold | None,
    kinds: VoterKinds,
    policy: Policy,
    *,
    model: DawidSkene | None = None,
    available: BoolArray | None = None,
    min_gold_for_calibration: int = 50,
    seed: int = 0,
) -> ConsensusResult:
    template = model if model is not None else DawidSkene()
    has_gold = gold is not None and len(gold) > 0
    weights = (
        correlation_weights(votes, gold)
        if gold is not None and has_gold
        else np.ones(votes.n_voters)
    )
    fitted = template.clone().fit(votes, gold, kinds, weights)
    raw = fitted.predict_proba(votes, gold, kinds)
    report = None
    posteriors = raw
    if gold is not None and len(gold) >= min_gold_for_calibration:
        report = calibrate(
            template, votes, gold, kinds=kinds, weights=weights, seed=seed, by_votes=True
        )
        posteriors = report.transform(
            fitted.predict_proba(votes, None, kinds), n_votes=cast_vote_counts(votes)
        )
        posteriors[gold.item] = raw[gold.item]
    if available is None:
        available = availability(votes, kinds)
    conflict = find_conflicts(
        votes, fitted.vote_reliability(votes, kinds), policy.conflict_threshold
    )
    decisions = decide(
        posteriors,
        votes_by_kind(votes, kinds),
        fitted.kind_matrices(),
        kinds.names,
        policy,
        available=available,
        conflict=conflict,
    )
    return ConsensusResult(
        posteriors=posteriors,
        raw_posteriors=raw,
        confusion=fitted.confusion_,
        kind_confusion=fitted.kind_confusion_,
        class_prior=fitted.class_prior_,
        weights=weights,
        calibration=report,
        decisions=decisions,
        model=fitted,
    )
