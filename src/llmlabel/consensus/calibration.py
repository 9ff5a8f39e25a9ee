"""Measuring and repairing the calibration of consensus posteriors.

Dawid–Skene multiplies votes as if they were independent; real voters share hard items, so its
posteriors are routinely over-confident (0.999 where 0.9 is right), and the decision policy
finalizes on those numbers. Calibration is therefore measured, never assumed: gold items are
split into folds, each fold's gold is hidden while the model is fitted, and the hidden items'
posteriors are compared with their truth (out-of-fold, so the model cannot have memorized them).
Two post-hoc repairs are fitted on those out-of-fold posteriors — temperature scaling (one
parameter, cannot reorder items, safe on little gold) and isotonic regression of the top-label
confidence (flexible, needs more gold) — and the choice among none/temperature/isotonic is made
by a second cross-validation over the same held-out posteriors, so the reported "after" figure
is itself held out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.optimize import isotonic_regression, minimize

from .dawid_skene import DawidSkene
from .em import softmax_and_lse, softmax_rows
from .errors import ConsensusInputError
from .votes import BoolArray, FloatArray, Gold, IntArray, VoterKinds, Votes

_EPS = 1e-12
_TINY = 1e-300  # keeps the ordering of saturated posteriors (1 − 1e-40 vs 1 − 1e-20) in logs


@dataclass(frozen=True)
class ReliabilityTable:
    """Equal-width bins of top-label confidence: how often the top label was right per bin."""

    lower: FloatArray
    upper: FloatArray
    count: IntArray
    confidence: FloatArray
    accuracy: FloatArray

    def rows(self) -> list[tuple[float, float, int, float, float]]:
        return [
            (float(lo), float(hi), int(n), float(c), float(a))
            for lo, hi, n, c, a in zip(
                self.lower, self.upper, self.count, self.confidence, self.accuracy, strict=True
            )
            if n > 0
        ]


def reliability_table(probs: FloatArray, truth: IntArray, n_bins: int = 10) -> ReliabilityTable:
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == truth).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    safe = np.maximum(count, 1)
    return ReliabilityTable(
        lower=edges[:-1],
        upper=edges[1:],
        count=count.astype(np.int64),
        confidence=np.bincount(b, conf, minlength=n_bins) / safe,
        accuracy=np.bincount(b, correct, minlength=n_bins) / safe,
    )


def expected_calibration_error(probs: FloatArray, truth: IntArray, n_bins: int = 10) -> float:
    """Count-weighted mean |accuracy − confidence| over top-label confidence bins."""
    t = reliability_table(probs, truth, n_bins)
    n = max(int(t.count.sum()), 1)
    return float((t.count * np.abs(t.accuracy - t.confidence)).sum() / n)


def bootstrap_ece(
    probs: FloatArray, truth: IntArray, *, n_boot: int = 200, seed: int = 0, n_bins: int = 10
) -> tuple[float, float, float]:
    """ECE with a 90% bootstrap interval, for gold sets too small for one number.

    ECE is biased upward on resamples (duplicated items fill bins unevenly), so the resampled
    values are shifted by that bias before taking percentiles.
    """
    rng = np.random.default_rng(seed)
    n = truth.shape[0]
    draws = rng.integers(0, n, size=(n_boot, n))
    stats = np.array([expected_calibration_error(probs[d], truth[d], n_bins) for d in draws])
    est = expected_calibration_error(probs, truth, n_bins)
    lo, hi = np.quantile(stats - (stats.mean() - est), [0.05, 0.95])
    return est, float(max(lo, 0.0)), float(max(hi, 0.0))


def stratified_ece(
    probs: FloatArray, truth: IntArray, n_votes: IntArray, n_bins: int = 10
) -> float:
    """ECE within strata of the vote count (1, 2–3, 4–7, 8–15, …), weighted by stratum size."""
    stratum = np.floor(np.log2(np.maximum(n_votes, 1))).astype(np.int64)
    total = 0.0
    for s in np.unique(stratum):
        rows = stratum == s
        total += rows.sum() * expected_calibration_error(probs[rows], truth[rows], n_bins)
    return total / max(truth.shape[0], 1)


def _check_votes(probs: FloatArray, n_votes: IntArray | None, name: str) -> IntArray:
    if n_votes is None:
        raise ConsensusInputError(
            f"this calibration ({name}) depends on each item's number of votes: pass n_votes"
        )
    counts = np.asarray(n_votes, dtype=np.int64).reshape(-1)
    if counts.shape[0] != probs.shape[0]:
        raise ConsensusInputError(
            f"n_votes has {counts.shape[0]} entries, posteriors have {probs.shape[0]} rows"
        )
    return counts


class Calibrator(Protocol):
    """A post-hoc repair of posteriors. ``n_votes`` (cast votes behind each row) is read by
    calibrators with ``needs_votes`` and ignored by the others."""

    name: str
    needs_votes: bool

    def fit(
        self, probs: FloatArray, truth: IntArray, n_votes: IntArray | None = None
    ) -> Calibrator: ...

    def transform(self, probs: FloatArray, n_votes: IntArray | None = None) -> FloatArray: ...


class Identity:
    name = "none"
    needs_votes = False

    def fit(self, probs: FloatArray, truth: IntArray, n_votes: IntArray | None = None) -> Identity:
        return self

    def transform(self, probs: FloatArray, n_votes: IntArray | None = None) -> FloatArray:
        return probs


class TemperatureScaling:
    """softmax(log p / T) with log T fitted by held-out negative log-likelihood.

    log T is linear in per-row features (``_features``): here a constant, one temperature for
    every row; ``VoteCountTemperature`` adds the log of the row's vote count.
    """

    name = "temperature"
    needs_votes = False
    bounds: tuple[tuple[float, float], ...] = ((float(np.log(0.05)), float(np.log(50.0))),)

    def __init__(self) -> None:
        self.coef_: FloatArray = np.zeros(len(self.bounds))

    def _features(self, probs: FloatArray, n_votes: IntArray | None) -> FloatArray:
        return np.ones((probs.shape[0], 1))

    @property
    def temperature_(self) -> float:
        """The one temperature (for this class, where T does not vary by row)."""
        return float(np.exp(self.coef_[0]))

    def fit(
        self, probs: FloatArray, truth: IntArray, n_votes: IntArray | None = None
    ) -> TemperatureScaling:
        logp = np.log(np.clip(probs, _TINY, 1.0))
        x = self._features(probs, n_votes)
        rows = np.arange(truth.shape[0])

        def nll(coef: FloatArray) -> float:
            z = logp / np.exp(x @ coef)[:, None]
            _, lse = softmax_and_lse(z)
            return float((lse - z[rows, truth]).mean())

        res = minimize(nll, np.zeros(x.shape[1]), method="L-BFGS-B", bounds=self.bounds)
        self.coef_ = np.asarray(res.x, dtype=np.float64)
        return self

    def transform(self, probs: FloatArray, n_votes: IntArray | None = None) -> FloatArray:
        t = np.exp(self._features(probs, n_votes) @ self.coef_)
        return softmax_rows(np.log(np.clip(probs, _TINY, 1.0)) / t[:, None])


class IsotonicCalibration:
    """Monotone map of top-label confidence; the other classes share the rest pro rata."""

    name = "isotonic"
    needs_votes = False

    def __init__(self) -> None:
        self.x_: FloatArray = np.array([0.0, 1.0])
        self.y_: FloatArray = np.array([0.0, 1.0])

    def fit(
        self, probs: FloatArray, truth: IntArray, n_votes: IntArray | None = None
    ) -> IsotonicCalibration:
        conf = probs.max(axis=1)
        correct = (probs.argmax(axis=1) == truth).astype(np.float64)
        order = np.argsort(conf, kind="stable")
        fitted = isotonic_regression(correct[order]).x
        k = probs.shape[1]
        # The top label is never less likely than a uniform guess among K classes.
        x, inv = np.unique(conf[order], return_inverse=True)
        y = np.bincount(inv, fitted) / np.bincount(inv)
        self.x_ = x
        self.y_ = np.clip(y, 1.0 / k, 1.0 - 1e-6)
        return self

    def transform(self, probs: FloatArray, n_votes: IntArray | None = None) -> FloatArray:
        top = probs.argmax(axis=1)
        rows = np.arange(probs.shape[0])
        conf = probs[rows, top]
        new = np.interp(conf, self.x_, self.y_)
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


class VoteCountTemperature(TemperatureScaling):
    """softmax(log p / T(n)) with T(n) = exp(a + b·log n), n the item's number of votes.

    Dawid–Skene adds one log-likelihood ratio per vote as if votes were independent, so its
    over-confidence grows with the number of votes: after three agreeing votes a posterior is
    nearly right, after twenty mixed ones it is far too sure. One temperature for all items
    averages the two regimes — too cautious where the decision policy stops (few votes), too
    bold on final posteriors. A temperature that grows with n (b ≈ 0.5–0.9 on the crowd sets:
    evidence that grows like n^(1−b), not n) fits both. Needs each item's vote count.
    """

    name = "vote-temperature"
    needs_votes = True
    bounds = ((-3.0, 4.0), (-1.0, 2.0))

    def _features(self, probs: FloatArray, n_votes: IntArray | None) -> FloatArray:
        counts = _check_votes(probs, n_votes, self.name)
        return np.column_stack([np.ones(counts.shape[0]), np.log(np.maximum(counts, 1))])

    @property
    def a_(self) -> float:
        return float(self.coef_[0])

    @property
    def b_(self) -> float:
        return float(self.coef_[1])


CALIBRATORS: dict[str, Callable[[], Calibrator]] = {
    "none": Identity,
    "temperature": TemperatureScaling,
    "isotonic": IsotonicCalibration,
    "vote-temperature": VoteCountTemperature,
}


@dataclass(frozen=True)
class CalibrationReport:
    """Held-out calibration before and after the chosen repair, and the repair itself."""

    method: str
    calibrator: Calibrator
    ece_before: float
    ece_after: float
    table_before: ReliabilityTable
    table_after: ReliabilityTable
    n_items: int
    ece_by_method: dict[str, float]

    @property
    def needs_votes(self) -> bool:
        """Whether ``transform`` needs each item's number of votes (``vote-temperature``)."""
        return self.calibrator.needs_votes

    def transform(self, probs: FloatArray, n_votes: IntArray | None = None) -> FloatArray:
        """Calibrated posteriors; ``n_votes`` (cast votes per row) is needed when
        ``needs_votes`` and ignored otherwise."""
        return self.calibrator.transform(probs, n_votes)


def _folds(n: int, n_folds: int, seed: int) -> list[IntArray]:
    perm = np.random.default_rng(seed).permutation(n)
    return [f.astype(np.int64) for f in np.array_split(perm, min(n_folds, n))]


def prefix_posteriors(
    model: DawidSkene,
    votes: Votes,
    items: IntArray,
    rng: np.random.Generator,
    kinds: VoterKinds | None = None,
) -> tuple[FloatArray, IntArray]:
    """Posteriors of ``items`` from a random prefix (1..all) of each one's votes, in random
    order, and the number of cast votes each prefix holds.

    The decision policy reads posteriors after a few votes, where the overconfidence from
    correlated votes is milder than after all of them; a calibrator fitted only on all-vote
    posteriors would over-correct exactly where the policy decides.
    """
    loglik = model.vote_log_likelihood(votes, kinds)
    pos = np.full(votes.n_items, -1, dtype=np.int64)
    pos[items] = np.arange(items.shape[0])
    rows = np.flatnonzero((pos[votes.item] >= 0) & (votes.label >= 0))
    rows = rows[np.lexsort((rng.random(rows.shape[0]), pos[votes.item[rows]]))]
    owner = pos[votes.item[rows]]
    n_votes = np.bincount(owner, minlength=items.shape[0])
    start = np.concatenate([[0], np.cumsum(n_votes)[:-1]])
    rank = np.arange(rows.shape[0]) - start[owner]
    take = rng.integers(1, np.maximum(n_votes, 1) + 1)
    keep = rank < take[owner]
    k = votes.n_classes
    flat = (owner[keep][:, None] * k + np.arange(k)).ravel()
    ev = np.bincount(flat, loglik[rows[keep]].ravel(), minlength=items.shape[0] * k)
    probs = softmax_rows(np.log(model.class_prior_) + ev.reshape(-1, k))
    return probs, np.minimum(take, n_votes).astype(np.int64)


def cast_vote_counts(votes: Votes) -> IntArray:
    """Cast (non-abstaining) votes per item: the ``n_votes`` a vote-temperature reads."""
    out: IntArray = np.bincount(votes.item[votes.label >= 0], minlength=votes.n_items)
    return out


def out_of_fold_posteriors(
    model: DawidSkene,
    votes: Votes,
    gold: Gold,
    *,
    kinds: VoterKinds | None = None,
    weights: FloatArray | None = None,
    n_folds: int = 5,
    prefixes: int = 0,
    seed: int = 0,
) -> tuple[FloatArray, IntArray, IntArray]:
    """Posteriors of gold items from fits that did not see their gold, with their truth and
    the cast votes behind each posterior.

    The first ``len(gold)`` rows are all-vote posteriors aligned with ``gold``; ``prefixes``
    more blocks follow, each from a random prefix of every item's votes.
    """
    rng = np.random.default_rng(seed)
    blocks = [np.zeros((len(gold), votes.n_classes)) for _ in range(prefixes + 1)]
    counts = [np.zeros(len(gold), dtype=np.int64) for _ in range(prefixes + 1)]
    counts[0] = cast_vote_counts(votes)[gold.item]
    for held in _folds(len(gold), n_folds, seed):
        keep = np.ones(len(gold), dtype=bool)
        keep[held] = False
        fitted = model.clone().fit(votes, gold.subset(keep), kinds, weights)
        blocks[0][held] = fitted.posteriors_[gold.item[held]]
        for block, count in zip(blocks[1:], counts[1:], strict=True):
            block[held], count[held] = prefix_posteriors(fitted, votes, gold.item[held], rng, kinds)
    return np.concatenate(blocks), np.tile(gold.label, prefixes + 1), np.concatenate(counts)


def _rows(n_votes: IntArray | None, rows: BoolArray | IntArray) -> IntArray | None:
    return None if n_votes is None else n_votes[rows]


def choose_calibration(
    probs: FloatArray,
    truth: IntArray,
    *,
    methods: tuple[str, ...] = ("none", "temperature", "isotonic"),
    n_folds: int = 5,
    seed: int = 0,
    n_bins: int = 10,
    n_votes: IntArray | None = None,
) -> CalibrationReport:
    """Pick the repair with the lowest cross-validated ECE on already held-out posteriors.

    With ``n_votes`` (each row's number of votes) the vote-count temperature joins the
    candidates, last, so it is chosen only when it is better by a rounded thousandth, and
    every candidate is scored by ECE within vote-count strata (``stratified_ece``): the policy
    acts on posteriors at every vote count, and a map blind to the count can look calibrated
    on the pooled rows while being too cautious after three votes and too bold after twenty.
    ``ece_by_method`` and ``ece_after`` then hold the stratified figures.
    """
    if n_votes is not None and VoteCountTemperature.name not in methods:
        methods = (*methods, VoteCountTemperature.name)
    for name in methods:
        if name not in CALIBRATORS:
            raise ConsensusInputError(
                f"calibration '{name}' is not one of: {', '.join(CALIBRATORS)}"
            )
        if CALIBRATORS[name]().needs_votes and n_votes is None:
            raise ConsensusInputError(f"the {name} calibration needs n_votes")
    folds = _folds(truth.shape[0], n_folds, seed + 1)
    ece_by: dict[str, float] = {}
    held_out: dict[str, FloatArray] = {}
    for name in methods:
        cal = np.zeros_like(probs)
        for f in folds:
            train = np.ones(truth.shape[0], dtype=bool)
            train[f] = False
            fitted = CALIBRATORS[name]().fit(probs[train], truth[train], _rows(n_votes, train))
            cal[f] = fitted.transform(probs[f], _rows(n_votes, f))
        held_out[name] = cal
        ece_by[name] = (
            expected_calibration_error(cal, truth, n_bins)
            if n_votes is None
            else stratified_ece(cal, truth, n_votes, n_bins)
        )
    # Prefer the simpler repair unless the flexible one is clearly better on held-out gold.
    best = min(methods, key=lambda m: (round(ece_by[m], 3), methods.index(m)))
    calibrator = CALIBRATORS[best]().fit(probs, truth, n_votes)
    return CalibrationReport(
        method=best,
        calibrator=calibrator,
        ece_before=expected_calibration_error(probs, truth, n_bins),
        ece_after=ece_by[best],
        table_before=reliability_table(probs, truth, n_bins),
        table_after=reliability_table(held_out[best], truth, n_bins),
        n_items=int(truth.shape[0]),
        ece_by_method=ece_by,
    )


def calibrate(
    model: DawidSkene,
    votes: Votes,
    gold: Gold,
    *,
    kinds: VoterKinds | None = None,
    weights: FloatArray | None = None,
    n_folds: int = 5,
    prefixes: int = 5,
    seed: int = 0,
    by_votes: bool = False,
) -> CalibrationReport:
    """k-fold over gold: measure held-out calibration and choose a repair for it.

    ``prefixes`` adds that many posteriors per gold item from random partial vote sets (see
    ``prefix_posteriors``) so the repair also holds where the policy decides after a few
    votes; 0 calibrates all-vote posteriors only (the right choice for reporting final
    posteriors). Several prefixes per item cover the few-vote regime densely enough for an
    isotonic map to resolve it; on the crowd sets one prefix left the policy asking for
    10–40% more votes at the same accuracy.

    ``by_votes`` adds the vote-count temperature (``VoteCountTemperature``) to the candidates;
    a report that chose it needs ``transform(probs, n_votes)``. On the crowd sets (bench) it
    cut the votes the dynamic policy used at target 0.95 by 15–65% on 8 of 11 sets, within
    1 pp of all-votes accuracy except possent (−1.3 pp: an honest 0.95 stop there is below
    the 0.963 that all votes reach).
    """
    probs, truth, counts = out_of_fold_posteriors(
        model,
        votes,
        gold,
        kinds=kinds,
        weights=weights,
        n_folds=n_folds,
        prefixes=prefixes,
        seed=seed,
    )
    return choose_calibration(
        probs, truth, n_folds=n_folds, seed=seed, n_votes=counts if by_votes else None
    )
