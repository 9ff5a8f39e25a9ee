"""Honest finalization: calibrating the stopping rule, not only the posterior.

A calibrated posterior is right as often as it says for an item looked at after a number of
votes fixed in advance. The policy does not look at a fixed moment: it finalizes at the
*first* vote whose posterior reaches the target, and first crossings are a selected sample
(optional stopping, the winner's curse). An item whose posterior crossed 0.95 on a lucky
early vote is wrong more often than 0.95 — its next votes might have pulled it back. Replayed
at target 0.95 with the repair alone (bench/consensus.py, held-out gold), the finalized items
promised 0.97–0.99 and were right 86% (adult), 90% (bluebirds), 95% (temp, sst2_crowd) of
the time; where the repair is itself overfitted at the top (an isotonic step at 1.0 on a few
hundred gold items), the stop makes it worse.

The repair measures the stopping rule itself. Each gold item's votes are replayed in random
orders with the same out-of-fold posteriors the calibration is fitted on (already repaired by
the cross-fitted calibration, so no item is scored by a map fitted on it). For every candidate
threshold t, each replay stops at the first vote whose confidence reaches t; whether its label
was right there gives A(t), the accuracy of what a policy finalizing at t finalizes.
``StoppingRule`` replaces an item's top-label confidence c by that figure for threshold c, so
"confidence ≥ τ" becomes "finalize at the smallest threshold whose finalized gold was right
≥ τ of the time" — for every target τ at once, so nothing about the policy is needed when
fitting, and the stored confidence of a finalized item is the accuracy promised for it. The
map applies to every posterior the policy reads, so an item decided on all its votes at once
(votes imported in bulk) gets the same figure, which is then conservative.

A(t) comes from a few hundred gold items, and the smallest threshold at which a noisy curve
clears τ is itself a lucky pick, so the rule reads a lower confidence bound on A(t) instead
of A(t) (Jeffreys interval over gold items, not replays: the replays of one item are not
independent evidence) and is made monotone from the left, which keeps that bound at the
threshold where each target is first met. Gold that is small buys few finalizations: a bound
of 0.97 needs about 50 gold items that stop there all right, 120 with one wrong, 300 with five;
below that no item is finalized and items go to review, which is the honest outcome. The rule
assumes votes arrive in random order, as the replays do; a policy that asks cheap voter kinds
first stops on different first votes.
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaincinv

from .votes import BoolArray, FloatArray, IntArray

_EPS = 1e-12
_TIE = 1e-9  # weight of the model's own confidence in the score: far below repaired steps


def replace_top_confidence(probs: FloatArray, new: FloatArray) -> FloatArray:
    """``probs`` with each row's top-label probability set to ``new``, the other classes
    sharing the rest pro rata (equally where the top held everything), and the top label kept
    on top."""
    top = probs.argmax(axis=1)
    rows = np.arange(probs.shape[0])
    conf = probs[rows, top]
    rest = np.clip(1.0 - conf, _EPS, None)
    # Shrinking the top label inflates the others pro rata; keep it on top.
    second = np.partition(probs, -2, axis=1)[:, -2]
    new = np.maximum(new, second / (rest + second) + 1e-9)
    out = probs * ((1.0 - new) / rest)[:, None]
    out[rows, top] = new
    flat = conf >= 1.0 - _EPS
    if flat.any():
        k = probs.shape[1]
        out[flat] = ((1.0 - new[flat]) / (k - 1))[:, None]
        out[rows[flat], top[flat]] = new[flat]
    result: FloatArray = out / out.sum(axis=1, keepdims=True)
    return result


def _at_least(values: FloatArray, weights: FloatArray, thresholds: FloatArray) -> FloatArray:
    """Σ weights[values ≥ t] for every t in ``thresholds``."""
    order = np.argsort(values, kind="stable")
    tail = np.concatenate([np.cumsum(weights[order][::-1])[::-1], [0.0]])
    out: FloatArray = tail[np.searchsorted(values[order], thresholds, side="left")]
    return out


def stopping_score(repaired: FloatArray, raw: FloatArray) -> FloatArray:
    """What the rule thresholds: the repaired top-label confidence, ties broken by the model's
    own. An isotonic repair maps a whole range of posteriors to one value, and a threshold on
    that value alone must take or leave the step whole; within it, the model's confidence still orders the rows, so a bound can be
    certified on the surer part of a step. Any score keeps the rule honest as long as fit and
    use read the same one; a finer score only lets it finalize more."""
    out: FloatArray = repaired.max(axis=1) + _TIE * raw.max(axis=1)
    return out


def first_crossings(
    conf: FloatArray, correct: BoolArray, path: IntArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """For every candidate threshold t: how many replays reach t, and how many of those are
    right at the first vote that does.

    Rows are posteriors after each vote of a replay (``path`` names the replay; a replay's rows
    are contiguous and in vote order). A replay's first crossing of t is a *record*, a row
    whose confidence beats every earlier one of its replay, and the record at row i is the
    first crossing exactly for t in (the previous record, conf[i]]. So the counts are interval
    counts over records, and the only thresholds that behave differently are the records'
    confidences: those are returned, ascending, as (thresholds, reached, right).
    """
    if conf.shape[0] == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    # Running maximum within each replay, on ranks (exact integers) offset per replay so one
    # global running maximum never crosses from one replay into the next.
    levels, rank = np.unique(conf, return_inverse=True)
    start = np.concatenate([[True], path[1:] != path[:-1]])
    run = np.cumsum(start) - 1
    key = rank + run * levels.shape[0]
    best = np.maximum.accumulate(key) - run * levels.shape[0]
    before = np.concatenate([[-1], best[:-1]])
    before[start] = -1
    record = rank > before
    hi, lo = conf[record], np.where(before[record] >= 0, levels[before[record].clip(0)], -1.0)
    ok = correct[record].astype(np.float64)
    thresholds = np.unique(hi)
    one = np.ones(hi.shape[0])
    # The record (lo, hi] holds t when hi ≥ t and lo < t; lo < hi, so it is #(hi ≥ t) − #(lo ≥ t).
    reached = _at_least(hi, one, thresholds) - _at_least(lo, one, thresholds)
    right = _at_least(hi, ok, thresholds) - _at_least(lo, ok, thresholds)
    return thresholds, reached, right


class StoppingRule:
    """Top-label confidence → a lower bound on the accuracy of items finalized on first
    reaching it (see the module docstring), read through ``stopping_score``.

    ``level`` is the one-sided error of the bound: the chance, per fit, that the gold at hand
    overstates what finalizing at a target is worth. One figure for every project, not tuned
    per set. 0.25 kept the target on pooled held-out gold of the crowd sets only on average
    (temp 0.948) and let possent's dynamic accuracy fall 1.1 pp below all votes; 0.1 keeps
    both on every set, and 0.05 costs sp_amt and temp another 7–11 points of votes.
    """

    level = 0.1

    def __init__(self) -> None:
        self.x_: FloatArray = np.array([0.0])
        self.y_: FloatArray = np.array([0.0])

    def fit(
        self,
        repaired: FloatArray,
        raw: FloatArray,
        truth: IntArray,
        path: IntArray,
        n_items: int,
    ) -> StoppingRule:
        """Posteriors after each vote of replays of gold items (``path``: as in
        ``first_crossings``), repaired and as the model gave them, and the items' truth.
        ``n_items`` gold items are behind the replays: each replay weighs n_items / replays,
        so the bound is as wide as the items, not the replays, warrant."""
        correct = repaired.argmax(axis=1) == truth
        score = stopping_score(repaired, raw)
        thresholds, reached, right = first_crossings(score, correct, path)
        per_replay = n_items / max(np.unique(path).shape[0], 1)
        n, s = reached * per_replay, right * per_replay
        lower = betaincinv(s + 0.5, n - s + 0.5, self.level)
        self.x_ = thresholds
        self.y_ = np.maximum.accumulate(lower)
        return self

    def transform(self, repaired: FloatArray, raw: FloatArray) -> FloatArray:
        """The repaired top-label confidence becomes the bound at the largest threshold ≤ the
        row's score; below every threshold seen, it is kept, capped at the lowest bound."""
        conf = repaired.max(axis=1)
        at = np.searchsorted(self.x_, stopping_score(repaired, raw), side="right") - 1
        new = np.where(at >= 0, self.y_[at.clip(0)], np.minimum(conf, self.y_[0]))
        return replace_top_confidence(repaired, np.maximum(new, 1.0 / repaired.shape[1]))

    def threshold(self, target: float) -> float:
        """The score (``stopping_score``: about the repaired confidence) at which ``target``
        is first reached; inf when no threshold on this gold reaches it."""
        hit = np.flatnonzero(self.y_ >= target)
        return float(self.x_[hit[0]]) if hit.shape[0] else float("inf")
