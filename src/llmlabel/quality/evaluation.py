"""Scoring a labeler against gold, and two labelers (or two prompts) against each other.

Pure numpy: one row per gold item — the true class, the predicted class (or an abstention), the
confidence the labeler gave its label, what the answer cost and how long it took. Every metric
is written as a function of *count weights* over the items, so the point estimate (all weights
1) and a thousand bootstrap resamples (weights = how often each item was drawn) run through
the same code; a comparison resamples the same items for both runs (a paired bootstrap), which
is what makes a small delta on a shared gold set detectable.

Conventions:
* an abstention counts as wrong for accuracy and as a miss for recall (a labeler cannot raise
  its accuracy by declining hard items); ``answered_accuracy`` is the accuracy where it answered;
* macro-F1 averages over the classes present in the gold or the predictions of the run;
* ECE is over answered items that came with a confidence, in the engine's 10 equal-width bins;
* latency percentiles are inverted-CDF quantiles (an observed latency, no interpolation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from llmlabel.quality.intervals import (
    NAN_INTERVAL,
    FloatArray,
    Interval,
    bootstrap_weights,
    percentile_interval,
    wilson_interval,
)

IntArray = NDArray[np.int64]
ABSTAIN = -1
N_BINS = 10
METRICS = ("accuracy", "macro_f1", "ece", "abstention_rate", "cost_per_item", "latency_p50", "latency_p95")
LOWER_IS_BETTER = frozenset({"ece", "abstention_rate", "cost_per_item", "latency_p50", "latency_p95"})


@dataclass(frozen=True)
class Predictions:
    """One row per gold item. ``confidence`` is the labeler's confidence in its own label (NaN
    when it gave none); ``cost_usd`` and ``latency_ms`` are per item (NaN latency: unknown)."""

    truth: IntArray
    label: IntArray
    n_classes: int
    confidence: FloatArray | None = None
    cost_usd: FloatArray | None = None
    latency_ms: FloatArray | None = None

    def __post_init__(self) -> None:
        n = np.asarray(self.truth).shape[0]
        truth = np.asarray(self.truth, dtype=np.int64).reshape(-1)
        label = np.asarray(self.label, dtype=np.int64).reshape(-1)
        if label.shape != (n,):
            raise ValueError(f"label has {label.shape[0]} entries, truth {n}")
        if ((truth < 0) | (truth >= self.n_classes)).any() or ((label < ABSTAIN) | (label >= self.n_classes)).any():
            raise ValueError(f"codes must be in [0, {self.n_classes - 1}] (label may be {ABSTAIN}: abstained)")

        def column(x: FloatArray | None, fill: float) -> FloatArray:
            arr = np.full(n, fill) if x is None else np.asarray(x, dtype=np.float64).reshape(-1)
            if arr.shape != (n,):
                raise ValueError(f"a per-item column has {arr.shape[0]} entries, expected {n}")
            return arr

        object.__setattr__(self, "truth", truth)
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "confidence", column(self.confidence, math.nan))
        object.__setattr__(self, "cost_usd", column(self.cost_usd, 0.0))
        object.__setattr__(self, "latency_ms", column(self.latency_ms, math.nan))

    def __len__(self) -> int:
        return int(self.truth.shape[0])

    @property
    def correct(self) -> NDArray[np.bool_]:
        out: NDArray[np.bool_] = self.label == self.truth
        return out

    def subset(self, rows: IntArray) -> Predictions:
        assert self.confidence is not None and self.cost_usd is not None and self.latency_ms is not None
        return Predictions(self.truth[rows], self.label[rows], self.n_classes, self.confidence[rows],
                           self.cost_usd[rows], self.latency_ms[rows])


@dataclass(frozen=True)
class ClassMetrics:
    code: int
    support: int  # gold items of this class
    predicted: int  # items the labeler gave this class
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class EvalMetrics:
    n: int
    answered: int
    accuracy: Interval
    answered_accuracy: Interval
    macro_f1: Interval
    ece: Interval
    abstention_rate: Interval
    cost_usd_total: float
    cost_per_item: Interval
    latency_p50: Interval
    latency_p95: Interval
    per_class: list[ClassMetrics] = field(default_factory=list)
    confusion: IntArray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))  # [true, said]; last column: abstained

    def value(self, name: str) -> Interval:
        result: Interval = getattr(self, name)
        return result

    def as_dict(self, class_names: list[str]) -> dict[str, object]:
        out: dict[str, object] = {"n": self.n, "answered": self.answered, "cost_usd_total": round(self.cost_usd_total, 6)}
        for name in ("accuracy", "answered_accuracy", *METRICS[1:]):
            out[name] = self.value(name).as_dict()
        out["per_class"] = {class_names[c.code]: {"support": c.support, "predicted": c.predicted,
                                                  "precision": round(c.precision, 6), "recall": round(c.recall, 6),
                                                  "f1": round(c.f1, 6)} for c in self.per_class}
        return out


class _Design:
    """Per-item columns that every metric is a weighted sum of."""

    def __init__(self, p: Predictions, classes_used: IntArray) -> None:
        assert p.confidence is not None and p.cost_usd is not None and p.latency_ms is not None
        k = p.n_classes
        n = len(p)
        said = np.where(p.label >= 0, p.label, k)
        self.k, self.n, self.classes_used = k, n, classes_used
        self.pairs = sparse.csr_matrix((np.ones(n), (np.arange(n), p.truth * (k + 1) + said)), shape=(n, k * (k + 1)))
        answered = p.label >= 0
        has_conf = answered & ~np.isnan(p.confidence)
        conf = np.where(has_conf, p.confidence, 0.0)
        edges = np.linspace(0.0, 1.0, N_BINS + 1)
        bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, N_BINS - 1)
        gap = np.where(has_conf, p.correct.astype(np.float64) - conf, 0.0)
        rows = np.flatnonzero(has_conf)
        self.gap = sparse.csr_matrix((gap[rows], (rows, bins[rows])), shape=(n, N_BINS))
        self.cols = np.column_stack([
            np.ones(n), p.correct.astype(np.float64), answered.astype(np.float64), has_conf.astype(np.float64),
            p.cost_usd,
        ])
        known = ~np.isnan(p.latency_ms)
        self.lat_order = np.flatnonzero(known)[np.argsort(p.latency_ms[known], kind="stable")]
        self.lat_sorted = p.latency_ms[self.lat_order]

    def stats(self, w: FloatArray) -> dict[str, FloatArray]:
        """Every metric for each row of weights ``w`` (resamples × items)."""
        s = w @ self.cols
        total, correct, answered, has_conf, cost = (s[:, j] for j in range(5))
        conf = np.asarray((self.pairs.T @ w.T).T).reshape(-1, self.k, self.k + 1)
        tp = np.einsum("bkk->bk", conf[:, :, : self.k])
        support = conf.sum(axis=2)
        predicted = conf[:, :, : self.k].sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
            gaps = np.abs(np.asarray((self.gap.T @ w.T).T)).sum(axis=1)
            out = {
                "accuracy": correct / total,
                "answered_accuracy": np.where(answered > 0, correct / answered, np.nan),
                "macro_f1": f1[:, self.classes_used].mean(axis=1) if self.classes_used.size else np.full(w.shape[0], np.nan),
                "ece": np.where(has_conf > 0, gaps / has_conf, np.nan),
                "abstention_rate": 1 - answered / total,
                "cost_per_item": cost / total,
            }
        for name, q in (("latency_p50", 0.5), ("latency_p95", 0.95)):
            out[name] = self._quantile(w, q)
        return out

    def _quantile(self, w: FloatArray, q: float) -> FloatArray:
        if self.lat_sorted.size == 0:
            return np.full(w.shape[0], np.nan)
        cum = np.cumsum(w[:, self.lat_order], axis=1)
        total = cum[:, -1:]
        idx = (cum < q * total - 1e-9).sum(axis=1)
        vals: FloatArray = np.where(total[:, 0] > 0, self.lat_sorted[np.minimum(idx, self.lat_sorted.size - 1)], np.nan)
        return vals


def _classes_used(*runs: Predictions) -> IntArray:
    k = runs[0].n_classes
    seen = np.zeros(k, dtype=bool)
    for p in runs:
        seen[p.truth] = True
        seen[p.label[p.label >= 0]] = True
    return np.flatnonzero(seen)


def evaluate(p: Predictions, *, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> EvalMetrics:
    """Every metric of one run, with bootstrap intervals (Wilson for the accuracies)."""
    n = len(p)
    k = p.n_classes
    assert p.cost_usd is not None
    if n == 0:
        nan = NAN_INTERVAL
        return EvalMetrics(n=0, answered=0, accuracy=nan, answered_accuracy=nan, macro_f1=nan, ece=nan,
                           abstention_rate=nan, cost_usd_total=0.0, cost_per_item=nan, latency_p50=nan, latency_p95=nan)
    design = _Design(p, _classes_used(p))
    point = design.stats(np.ones((1, n)))
    boots: dict[str, list[FloatArray]] = {m: [] for m in point}
    for w in bootstrap_weights(n, n_boot, seed):
        for name, vals in design.stats(w).items():
            boots[name].append(vals)

    def interval(name: str, size: int = n) -> Interval:
        samples = np.concatenate(boots[name]) if boots[name] else np.array([])
        return percentile_interval(float(point[name][0]), samples, size, confidence)

    answered = int((p.label >= 0).sum())
    correct = int(p.correct.sum())
    conf = np.asarray(design.pairs.T @ np.ones(n)).reshape(k, k + 1).astype(np.int64)
    per_class = []
    for c in design.classes_used.tolist():
        tp, sup, pred = int(conf[c, c]), int(conf[c].sum()), int(conf[:, c].sum())
        per_class.append(ClassMetrics(c, sup, pred, tp / pred if pred else 0.0, tp / sup if sup else 0.0,
                                      2 * tp / (sup + pred) if sup + pred else 0.0))
    assert p.confidence is not None
    n_conf = int(((p.label >= 0) & ~np.isnan(p.confidence)).sum())
    return EvalMetrics(
        n=n, answered=answered,
        accuracy=wilson_interval(correct, n, confidence),
        answered_accuracy=wilson_interval(correct, answered, confidence),
        macro_f1=interval("macro_f1"), ece=interval("ece", n_conf), abstention_rate=interval("abstention_rate"),
        cost_usd_total=float(p.cost_usd.sum()), cost_per_item=interval("cost_per_item"),
        latency_p50=interval("latency_p50", design.lat_sorted.size),
        latency_p95=interval("latency_p95", design.lat_sorted.size),
        per_class=per_class, confusion=conf,
    )


@dataclass(frozen=True)
class Delta:
    """``b − a`` for one metric, with a paired bootstrap interval; ``better`` says whether the
    interval excludes 0 in b's favour (+1), in a's (−1), or not (0)."""

    metric: str
    a: float
    b: float
    delta: Interval

    @property
    def better(self) -> int:
        lo, hi = self.delta.low, self.delta.high
        if math.isnan(lo) or (lo <= 0 <= hi):
            return 0
        up = lo > 0
        return (-1 if up else 1) if self.metric in LOWER_IS_BETTER else (1 if up else -1)


@dataclass(frozen=True)
class Comparison:
    n: int
    deltas: list[Delta]
    fixed: IntArray  # rows wrong (or abstained) in a, right in b
    broken: IntArray  # rows right in a, wrong (or abstained) in b


def compare(a: Predictions, b: Predictions, *, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> Comparison:
    """b against a on the same gold items (row i of both is the same item)."""
    if len(a) != len(b) or not np.array_equal(a.truth, b.truth):
        raise ValueError("the two runs must score the same gold items in the same order")
    n = len(a)
    used = _classes_used(a, b)
    da, db = _Design(a, used), _Design(b, used)
    ones = np.ones((1, n))
    pa, pb = da.stats(ones), db.stats(ones)
    samples: dict[str, list[FloatArray]] = {m: [] for m in METRICS}
    for w in bootstrap_weights(n, n_boot, seed):
        sa, sb = da.stats(w), db.stats(w)
        for m in METRICS:
            samples[m].append(sb[m] - sa[m])
    deltas = [
        Delta(m, float(pa[m][0]), float(pb[m][0]),
              percentile_interval(float(pb[m][0] - pa[m][0]), np.concatenate(samples[m]) if samples[m] else np.array([]),
                                  n, confidence))
        for m in METRICS
    ]
    ra, rb = a.correct, b.correct
    return Comparison(n, deltas, np.flatnonzero(~ra & rb), np.flatnonzero(ra & ~rb))
