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
is itself held out. Where the policy reads posteriors part-way through an item's votes, the
candidates also include repairs that read the vote count (a temperature that grows with it,
an isotonic map per vote-count stratum), fitted on the posterior after every vote.

A repair fitted on every vote is right on average over votes, but the policy finalizes at the
first vote that reaches its target, and first crossings are lucky more often than average.
So a calibration fitted on vote prefixes also carries a ``StoppingRule`` (stopping.py),
fitted on the same replays: its top-label confidence is then a lower bound on how often items
finalized on first reaching it are right, which is what a target promises.
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
from .stopping import StoppingRule, replace_top_confidence
from .votes import BoolArray, FloatArray, Gold, IntArray, VoterKinds, Votes

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


def vote_stratum(n_votes: IntArray) -> IntArray:
    """Vote-count strata 1, 2–3, 4–7, 8–15, … as 0, 1, 2, 3, …"""
    out: IntArray = np.floor(np.log2(np.maximum(n_votes, 1))).astype(np.int64)
    return out


def stratified_ece(
    probs: FloatArray, truth: IntArray, n_votes: IntArray, n_bins: int = 10
) -> float:
    """ECE within strata of the vote count (``vote_stratum``), weighted by stratum size."""
    stratum = vote_stratum(n_votes)
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
        # One point per distinct confidence, weighted by its rows: fitted row by row, the
        # arbitrary order of 0s and 1s within a tie leaked across neighbouring values (posteriors
        # after one or two votes take few distinct values, each shared by hundreds of rows).
        x, inv = np.unique(conf, return_inverse=True)
        size = np.bincount(inv).astype(np.float64)
        y = isotonic_regression(np.bincount(inv, correct) / size, weights=size).x
        k = probs.shape[1]
        # The top label is never less likely than a uniform guess among K classes.
        self.x_ = x
        self.y_ = np.clip(y, 1.0 / k, 1.0 - 1e-6)
        return self

    def transform(self, probs: FloatArray, n_votes: IntArray | None = None) -> FloatArray:
        return replace_top_confidence(probs, np.interp(probs.max(axis=1), self.x_, self.y_))


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


class VoteCountIsotonic:
    """An isotonic map of top-label confidence per vote-count stratum (1, 2–3, 4–7, …).

    A temperature bends all of a stratum's confidences by one factor, but after one or two
    votes a posterior takes few values (one per voter and label said), each right at its own
    rate: on sst2_crowd one "negative" vote says 0.94 and is right 92% of the time while one
    "positive" vote is about calibrated, so no temperature can keep the first from finalizing at
    0.95. A monotone map per stratum fits each. A stratum with fewer than ``min_rows`` rows uses
    the nearest stratum that has them (above the largest, the largest); with none, one map.
    """

    name = "vote-isotonic"
    needs_votes = True
    min_rows = 50

    def __init__(self) -> None:
        self.strata_: IntArray = np.zeros(1, dtype=np.int64)
        self.maps_: list[IsotonicCalibration] = [IsotonicCalibration()]

    def fit(
        self, probs: FloatArray, truth: IntArray, n_votes: IntArray | None = None
    ) -> VoteCountIsotonic:
        stratum = vote_stratum(_check_votes(probs, n_votes, self.name))
        levels, sizes = np.unique(stratum, return_counts=True)
        keep = levels[sizes >= self.min_rows]
        if keep.shape[0] == 0:
            self.strata_ = np.zeros(1, dtype=np.int64)
            self.maps_ = [IsotonicCalibration().fit(probs, truth)]
            return self
        self.strata_ = keep
        self.maps_ = [
            IsotonicCalibration().fit(probs[stratum == s], truth[stratum == s]) for s in keep
        ]
        return self

    def transform(self, probs: FloatArray, n_votes: IntArray | None = None) -> FloatArray:
        stratum = vote_stratum(_check_votes(probs, n_votes, self.name))
        nearest = np.abs(stratum[:, None] - self.strata_[None, :]).argmin(axis=1)
        out = np.empty_like(probs)
        for j, cal in enumerate(self.maps_):
            rows = nearest == j
            if rows.any():
                out[rows] = cal.transform(probs[rows])
        return out


CALIBRATORS: dict[str, Callable[[], Calibrator]] = {
    "none": Identity,
    "temperature": TemperatureScaling,
    "isotonic": IsotonicCalibration,
    "vote-temperature": VoteCountTemperature,
    "vote-isotonic": VoteCountIsotonic,
}
VOTE_COUNT_METHODS = ("vote-temperature", "vote-isotonic")


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
    stopping: StoppingRule | None = None

    @property
    def needs_votes(self) -> bool:
        """Whether ``transform`` needs each item's number of votes (``vote-temperature``)."""
        return self.calibrator.needs_votes

    def transform(self, probs: FloatArray, n_votes: IntArray | None = None) -> FloatArray:
        """Calibrated posteriors; ``n_votes`` (cast votes per row) is needed when
        ``needs_votes`` and ignored otherwise. With a ``stopping`` rule (calibrations fitted on
        vote prefixes, for the policy), the top-label confidence is then what finalizing at
        it is worth: a lower bound on the accuracy of items finalized on first reaching it."""
        out = self.calibrator.transform(probs, n_votes)
        return out if self.stopping is None else self.stopping.transform(out, probs)


def _folds(n: int, n_folds: int, seed: int) -> list[IntArray]:
    perm = np.random.default_rng(seed).permutation(n)
    return [f.astype(np.int64) for f in np.array_split(perm, min(n_folds, n))]


def prefix_posteriors(
    model: DawidSkene,
    votes: Votes,
    items: IntArray,
    rng: np.random.Generator,
    kinds: VoterKinds | None = None,
) -> tuple[FloatArray, IntArray, IntArray]:
    """Posteriors of ``items`` after every vote of a random order of each one's votes: one
    row per cast vote, with the number of votes behind it and the position in ``items`` of
    the item it belongs to.

    The decision policy reads the posterior after each vote, where the overconfidence from
    correlated votes is milder than after all of them; a calibrator fitted only on all-vote
    posteriors would over-correct exactly where the policy decides. Every prefix, not a few
    random ones, because the policy decides most often after the first votes: with five
    random prefixes per item a twenty-vote item gave a single-vote row one time in four.
    """
    loglik = model.vote_log_likelihood(votes, kinds)
    pos = np.full(votes.n_items, -1, dtype=np.int64)
    pos[items] = np.arange(items.shape[0])
    rows = np.flatnonzero((pos[votes.item] >= 0) & (votes.label >= 0))
    rows = rows[np.lexsort((rng.random(rows.shape[0]), pos[votes.item[rows]]))]
    owner = pos[votes.item[rows]]
    n_votes = np.bincount(owner, minlength=items.shape[0])
    start = np.cumsum(n_votes) - n_votes
    rank = np.arange(rows.shape[0]) - start[owner]
    # Running sums over the whole table minus the sum before each item's first vote.
    running = np.cumsum(loglik[rows], axis=0)
    before = np.vstack([np.zeros((1, votes.n_classes)), running])[start[owner]]
    probs = softmax_rows(np.log(model.class_prior_) + running - before)
    return probs, (rank + 1).astype(np.int64), owner


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

    The first ``len(gold)`` rows are all-vote posteriors aligned with ``gold``; then, for each
    of ``prefixes`` random vote orders, one row per prefix of every item (``prefix_posteriors``).
    """
    probs, truth, counts, _, _ = _out_of_fold(
        model, votes, gold, kinds, weights, n_folds=n_folds, prefixes=prefixes, seed=seed
    )
    return probs, truth, counts


def _out_of_fold(
    model: DawidSkene,
    votes: Votes,
    gold: Gold,
    kinds: VoterKinds | None,
    weights: FloatArray | None,
    *,
    n_folds: int,
    prefixes: int,
    seed: int,
) -> tuple[FloatArray, IntArray, IntArray, IntArray, IntArray]:
    """``out_of_fold_posteriors`` plus the gold row each posterior row belongs to and the
    replay (one vote order of one item; −1 for all-vote rows) it is a prefix of, its rows
    contiguous and in vote order."""
    rng = np.random.default_rng(seed)
    probs = [np.zeros((len(gold), votes.n_classes))]
    counts = [cast_vote_counts(votes)[gold.item]]
    owners = [np.arange(len(gold))]
    paths = [np.full(len(gold), -1, dtype=np.int64)]
    for held in _folds(len(gold), n_folds, seed):
        keep = np.ones(len(gold), dtype=bool)
        keep[held] = False
        fitted = model.clone().fit(votes, gold.subset(keep), kinds, weights)
        probs[0][held] = fitted.posteriors_[gold.item[held]]
        for _ in range(prefixes):
            p, n, owner = prefix_posteriors(fitted, votes, gold.item[held], rng, kinds)
            probs.append(p)
            counts.append(n)
            owners.append(held[owner])
            paths.append(len(paths) * len(gold) + held[owner])
    owner = np.concatenate(owners)
    return (
        np.concatenate(probs),
        gold.label[owner],
        np.concatenate(counts),
        owner,
        np.concatenate(paths),
    )


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
    groups: IntArray | None = None,
    paths: IntArray | None = None,
) -> CalibrationReport:
    """Pick the repair with the lowest cross-validated ECE on already held-out posteriors.

    With ``n_votes`` (each row's number of votes) the vote-count repairs join the candidates,
    last, so one is chosen only when it is better by a rounded thousandth, and every candidate
    is scored by ECE within vote-count strata (``stratified_ece``): the policy acts on
    posteriors at every vote count, and a map blind to the count can look calibrated on the
    pooled rows while being too cautious after three votes and too bold after twenty.
    ``ece_by_method`` and ``ece_after`` then hold the stratified figures.

    ``groups`` (one id per row, such as the gold item a prefix posterior belongs to) keeps a
    group's rows in one fold, so no candidate is scored on an item it was fitted on.

    ``paths`` (one id per row: the vote order a prefix posterior belongs to, its rows
    contiguous and in vote order; −1 for rows that are not prefixes) adds the ``stopping``
    rule, fitted on the chosen repair's cross-fitted posteriors of those rows.
    """
    if n_votes is not None:
        methods = (*methods, *(m for m in VOTE_COUNT_METHODS if m not in methods))
    for name in methods:
        if name not in CALIBRATORS:
            raise ConsensusInputError(
                f"calibration '{name}' is not one of: {', '.join(CALIBRATORS)}"
            )
        if CALIBRATORS[name]().needs_votes and n_votes is None:
            raise ConsensusInputError(f"the {name} calibration needs n_votes")
    if groups is None:
        folds = _folds(truth.shape[0], n_folds, seed + 1)
    else:
        ids, row_group = np.unique(groups, return_inverse=True)
        fold_of = np.zeros(ids.shape[0], dtype=np.int64)
        for j, f in enumerate(_folds(ids.shape[0], n_folds, seed + 1)):
            fold_of[f] = j
        folds = [np.flatnonzero(fold_of[row_group] == j) for j in range(fold_of.max() + 1)]
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
    stopping = None
    if paths is not None and (paths >= 0).any():
        replay = paths >= 0
        n_items = np.unique(groups[replay]).shape[0] if groups is not None else replay.sum()
        stopping = StoppingRule().fit(
            held_out[best][replay], probs[replay], truth[replay], paths[replay], int(n_items)
        )
    return CalibrationReport(
        method=best,
        calibrator=calibrator,
        ece_before=expected_calibration_error(probs, truth, n_bins),
        ece_after=ece_by[best],
        table_before=reliability_table(probs, truth, n_bins),
        table_after=reliability_table(held_out[best], truth, n_bins),
        n_items=int(truth.shape[0]),
        ece_by_method=ece_by,
        stopping=stopping,
    )


def calibrate(
    model: DawidSkene,
    votes: Votes,
    gold: Gold,
    *,
    kinds: VoterKinds | None = None,
    weights: FloatArray | None = None,
    n_folds: int = 5,
    prefixes: int = 2,
    seed: int = 0,
    by_votes: bool = False,
) -> CalibrationReport:
    """k-fold over gold: measure held-out calibration and choose a repair for it.

    ``prefixes`` adds, for that many random vote orders of each gold item, the posterior after
    every vote (see ``prefix_posteriors``), so the repair also holds where the policy decides
    after a few votes; 0 calibrates all-vote posteriors only (the right choice for reporting
    final posteriors). The choice among repairs folds by gold item.

    ``by_votes`` adds the vote-count repairs (``VoteCountTemperature``, ``VoteCountIsotonic``)
    to the candidates; a report that chose one needs ``transform(probs, n_votes)``.
    """
    probs, truth, counts, owner, paths = _out_of_fold(
        model, votes, gold, kinds, weights, n_folds=n_folds, prefixes=prefixes, seed=seed
    )
    return choose_calibration(
        probs,
        truth,
        n_folds=n_folds,
        seed=seed,
        n_votes=counts if by_votes else None,
        groups=owner,
        paths=paths,
    )
