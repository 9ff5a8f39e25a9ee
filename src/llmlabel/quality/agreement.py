"""Agreement between voters: pure numpy over a long vote table, each statistic with an interval.

Inputs are integer codes, as in the consensus engine: ``item`` (0..n_items-1), ``voter``
(0..n_voters-1) and ``label`` (0..K-1, or ``ABSTAIN`` = -1, which every statistic skips).

Why these statistics:

* **Krippendorff's α** is the one that copes with what annotation data looks like: any number
  of voters per item, missing answers, nominal or interval labels. The point estimate comes from
  the ``krippendorff`` package; the bootstrap uses the same formula decomposed into per-item
  sums (α is a ratio of sums over items), so a thousand resamples of 100,000 votes are a few
  matrix products instead of a thousand package calls.
* **Fleiss' κ** for readers who know it (and for comparing with published figures).
* **Cohen's κ per pair** of voters who shared enough items: the finest-grained view, where a
  rogue annotator or a broken labeler shows up as a row of low values.
* **Per voter**: accuracy against gold and against the consensus, with a confusion matrix.
* **LLM vs human**: does the machine side agree with the human side item by item.
* **Bayesian Truth Serum** (Prelec 2004) where voters also predicted how others would answer:
  it rewards answers that are more common than predicted ("surprisingly common"), which is
  where the truth tends to hide when most people are wrong the same way.

Intervals resample *items* (the unit that is sampled in annotation), never single votes, since
votes on one item are not independent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

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
PACKAGE_MAX_CELLS = 30_000_000  # items × V × V: above it α comes from the per-item sums
Level = Literal["nominal", "interval"]


def _cast(item: object, voter: object, label: object) -> tuple[IntArray, IntArray, IntArray]:
    i, v, lab = (np.asarray(x, dtype=np.int64).reshape(-1) for x in (item, voter, label))
    if not i.shape == v.shape == lab.shape:
        raise ValueError("item, voter and label must have the same length")
    keep = lab >= 0
    return i[keep], v[keep], lab[keep]


def value_counts(item: object, label: object, n_items: int, n_values: int) -> sparse.csr_matrix:
    """(items × values) counts of answers, abstentions left out; sparse (most cells are 0)."""
    i, _, lab = _cast(item, np.zeros_like(np.asarray(item)), label)
    data = np.ones(i.shape[0], dtype=np.float64)
    return sparse.csr_matrix((data, (i, lab)), shape=(n_items, n_values))


def _pairable(counts: sparse.csr_matrix) -> sparse.csr_matrix:
    m = np.asarray(counts.sum(axis=1)).ravel()
    result: sparse.csr_matrix = counts[np.flatnonzero(m >= 2)]
    return result


# -- Krippendorff's alpha ----------------------------------------------------------------------


def _alpha_parts(counts: sparse.csr_matrix, level: Level, values: FloatArray) -> tuple[FloatArray, sparse.csr_matrix | None]:
    """Per-item terms whose (weighted) sums give α: columns disagreement, m, s1, s2."""
    m = np.asarray(counts.sum(axis=1)).ravel()
    if level == "nominal":
        q = np.asarray(counts.multiply(counts).sum(axis=1)).ravel()
        dis = (m * m - q) / (m - 1)
        return np.column_stack([dis, m]), counts
    s1 = counts @ values
    s2 = counts @ (values * values)
    dis = 2 * (m * s2 - s1 * s1) / (m - 1)
    return np.column_stack([dis, m, s1, s2]), None


def _alpha_from_sums(sums: FloatArray, class_totals: FloatArray | None, level: Level) -> FloatArray:
    """α for each row of weighted sums (rows are resamples; one row is the estimate)."""
    dis, n = sums[:, 0], sums[:, 1]
    if level == "nominal":
        assert class_totals is not None
        expected = n * n - (class_totals * class_totals).sum(axis=1)
    else:
        s1, s2 = sums[:, 2], sums[:, 3]
        expected = 2 * (n * s2 - s1 * s1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = np.where(expected > 0, 1 - (n - 1) * dis / expected, np.nan)
    return out


def krippendorff_alpha(
    counts: sparse.csr_matrix | FloatArray, *, level: Level = "nominal", values: FloatArray | None = None,
    n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
) -> Interval:
    """Krippendorff's α over an (items × values) count matrix, with a bootstrap interval.

    ``values`` are the numbers behind the value columns for the interval level (default
    0..V-1). ``n`` of the result is the number of items with two or more answers.
    """
    import krippendorff

    counts = sparse.csr_matrix(counts, dtype=np.float64)
    n_values = counts.shape[1]
    vals = np.arange(n_values, dtype=np.float64) if values is None else np.asarray(values, dtype=np.float64)
    pair = _pairable(counts)
    n_items = pair.shape[0]
    if n_items == 0 or n_values < 2:
        return NAN_INTERVAL
    totals = np.asarray(pair.sum(axis=0)).ravel()
    if (totals > 0).sum() < 2:  # one value used throughout: no disagreement to measure
        return Interval(1.0, 1.0, 1.0, n_items)
    parts, by_class = _alpha_parts(pair, level, vals)
    used = np.flatnonzero(totals > 0)  # the package wants no empty value columns
    if n_items * used.size * used.size <= PACKAGE_MAX_CELLS:
        estimate = float(krippendorff.alpha(value_counts=pair[:, used].toarray(), value_domain=vals[used],
                                            level_of_measurement=level))
    else:  # the package builds an items × V × V array; the same formula as sums over items
        class_totals = totals[None, :] if by_class is not None else None
        estimate = float(_alpha_from_sums(parts.sum(axis=0, keepdims=True), class_totals, level)[0])
    samples = []
    for w in bootstrap_weights(n_items, n_boot, seed):
        sums = w @ parts
        class_totals = np.asarray((by_class.T @ w.T).T) if by_class is not None else None
        samples.append(_alpha_from_sums(sums, class_totals, level))
    return percentile_interval(estimate, np.concatenate(samples) if samples else np.array([]), n_items, confidence)


# -- Fleiss' kappa -----------------------------------------------------------------------------


def _fleiss_parts(pair: sparse.csr_matrix) -> FloatArray:
    m = np.asarray(pair.sum(axis=1)).ravel()
    q = np.asarray(pair.multiply(pair).sum(axis=1)).ravel()
    return np.column_stack([(q - m) / (m * (m - 1)), np.ones(pair.shape[0]), m])


def _fleiss_from_sums(sums: FloatArray, class_totals: FloatArray) -> FloatArray:
    p_bar = sums[:, 0] / sums[:, 1]
    p_j = class_totals / sums[:, 2:3]
    p_e = (p_j * p_j).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = np.where(p_e < 1, (p_bar - p_e) / (1 - p_e), np.nan)
    return out


def fleiss_kappa(
    counts: sparse.csr_matrix | FloatArray, *, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
) -> Interval:
    """Fleiss' κ over an (items × classes) count matrix; items with fewer than two answers are
    left out, and items with different numbers of answers are averaged per item (the usual
    generalization)."""
    pair = _pairable(sparse.csr_matrix(counts, dtype=np.float64))
    n_items = pair.shape[0]
    if n_items == 0:
        return NAN_INTERVAL
    per_item = _fleiss_parts(pair)
    estimate = float(_fleiss_from_sums(per_item.sum(axis=0, keepdims=True), np.asarray(pair.sum(axis=0)))[0])
    samples = [_fleiss_from_sums(w @ per_item, np.asarray((pair.T @ w.T).T)) for w in bootstrap_weights(n_items, n_boot, seed)]
    return percentile_interval(estimate, np.concatenate(samples) if samples else np.array([]), n_items, confidence)


def alpha_and_fleiss(
    counts: sparse.csr_matrix | FloatArray, *, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
) -> tuple[Interval, Interval]:
    """Nominal α and Fleiss' κ of the same answers from one set of resamples (the two share the
    per-class totals, the costly part): half the work of computing them apart, same results."""
    counts = sparse.csr_matrix(counts, dtype=np.float64)
    pair = _pairable(counts)
    n_items = pair.shape[0]
    totals = np.asarray(pair.sum(axis=0)).ravel()
    if n_items == 0 or (totals > 0).sum() < 2:
        return krippendorff_alpha(counts, n_boot=0), fleiss_kappa(counts, n_boot=0)
    alpha_est = krippendorff_alpha(counts, n_boot=0).estimate
    a_parts, _ = _alpha_parts(pair, "nominal", np.arange(counts.shape[1], dtype=np.float64))
    f_parts = _fleiss_parts(pair)
    fleiss_est = float(_fleiss_from_sums(f_parts.sum(axis=0, keepdims=True), totals[None, :])[0])
    a_samples, f_samples = [], []
    for w in bootstrap_weights(n_items, n_boot, seed):
        class_totals = np.asarray((pair.T @ w.T).T)
        a_samples.append(_alpha_from_sums(w @ a_parts, class_totals, "nominal"))
        f_samples.append(_fleiss_from_sums(w @ f_parts, class_totals))
    empty = np.array([])
    return (percentile_interval(alpha_est, np.concatenate(a_samples) if a_samples else empty, n_items, confidence),
            percentile_interval(fleiss_est, np.concatenate(f_samples) if f_samples else empty, n_items, confidence))


# -- Cohen's kappa -----------------------------------------------------------------------------


def _kappa_from_confusion(conf: FloatArray) -> FloatArray:
    """κ for a stack of (…, K, K) confusion matrices of two raters."""
    total = conf.sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        po = np.trace(conf, axis1=-2, axis2=-1) / total
        pe = (conf.sum(axis=-1) * conf.sum(axis=-2)).sum(axis=-1) / (total * total)
        out: FloatArray = np.where(pe < 1, (po - pe) / (1 - pe), np.nan)
    return out


def cohen_kappa(a: object, b: object, n_classes: int) -> float:
    """Cohen's κ of two raters' labels on the same items (abstentions in either are dropped)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    keep = (a >= 0) & (b >= 0)
    conf = np.bincount(a[keep] * n_classes + b[keep], minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    return float(_kappa_from_confusion(conf.astype(np.float64)))


@dataclass(frozen=True)
class PairKappa:
    voter_a: int
    voter_b: int
    kappa: Interval
    agreement: float  # raw share of shared items with the same label


def vote_pairs(item: object, voter: object, label: object) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Every pair of answers on the same item: (voter_a < voter_b, label_a, label_b)."""
    i, v, lab = _cast(item, voter, label)
    order = np.lexsort((v, i))
    i, v, lab = i[order], v[order], lab[order]
    va, vb, la, lb = [], [], [], []
    d = 1
    while d < i.shape[0]:
        same = i[d:] == i[:-d]
        if not same.any():
            break
        va.append(v[:-d][same])
        vb.append(v[d:][same])
        la.append(lab[:-d][same])
        lb.append(lab[d:][same])
        d += 1
    if not va:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    return np.concatenate(va), np.concatenate(vb), np.concatenate(la), np.concatenate(lb)


def pairwise_kappa(
    item: object, voter: object, label: object, *, n_voters: int, n_classes: int, min_shared: int = 10,
    n_boot: int = 200, confidence: float = 0.95, seed: int = 0, max_cells: float = 5e7,
) -> list[PairKappa]:
    """Cohen's κ for every pair of voters with at least ``min_shared`` items answered by both,
    with a bootstrap over each pair's shared items; most shared first.

    When resamples × answer pairs would pass ``max_cells`` (millions of votes), the interval is
    the large-sample one instead, κ ± z·√(pₒ(1−pₒ)/n)/(1−pₑ): at that size both agree closely.
    """
    va, vb, la, lb = vote_pairs(item, voter, label)
    pair_code = va * n_voters + vb
    codes, inverse, sizes = np.unique(pair_code, return_inverse=True, return_counts=True)
    keep_pair = sizes >= min_shared
    if not keep_pair.any():
        return []
    new_index = np.cumsum(keep_pair) - 1
    rows = keep_pair[inverse]
    pid = new_index[inverse[rows]]
    la, lb = la[rows], lb[rows]
    n_pairs = int(keep_pair.sum())
    k2 = n_classes * n_classes
    cell = la * n_classes + lb
    conf = np.bincount(pid * k2 + cell, minlength=n_pairs * k2).reshape(n_pairs, n_classes, n_classes).astype(np.float64)
    estimate = _kappa_from_confusion(conf)
    agreement = np.trace(conf, axis1=1, axis2=2) / conf.sum(axis=(1, 2))
    kept_codes = codes[keep_pair]
    if n_boot * pid.shape[0] > max_cells:
        return _normal_pairs(conf, estimate, agreement, kept_codes, n_voters, confidence)
    order = np.argsort(pid, kind="stable")
    pid_sorted, cell_sorted = pid[order], cell[order]
    size = np.bincount(pid_sorted, minlength=n_pairs)
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // max(pid_sorted.shape[0], 1))
    samples = []
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        pick = start[pid_sorted] + (rng.random((b, pid_sorted.shape[0]), dtype=np.float32) * size[pid_sorted]).astype(np.int64)
        flat = (np.arange(b)[:, None] * n_pairs + pid_sorted[None, :]) * k2 + cell_sorted[pick]
        boot = np.bincount(flat.ravel(), minlength=b * n_pairs * k2).reshape(b, n_pairs, n_classes, n_classes)
        samples.append(_kappa_from_confusion(boot.astype(np.float64)))
        done += b
    boot_k = np.concatenate(samples) if samples else np.zeros((0, n_pairs))
    out = [
        PairKappa(int(c // n_voters), int(c % n_voters),
                  percentile_interval(float(estimate[p]), boot_k[:, p], int(size[p]), confidence), float(agreement[p]))
        for p, c in enumerate(kept_codes)
    ]
    return sorted(out, key=lambda r: (-r.kappa.n, r.voter_a, r.voter_b))


def _normal_pairs(conf: FloatArray, estimate: FloatArray, agreement: FloatArray, codes: IntArray, n_voters: int,
                  confidence: float) -> list[PairKappa]:
    from llmlabel.quality.intervals import z_value

    n = conf.sum(axis=(1, 2))
    pe = (conf.sum(axis=2) * conf.sum(axis=1)).sum(axis=1) / (n * n)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(agreement * (1 - agreement) / n) / (1 - pe)
    z = z_value(confidence)
    out = [
        PairKappa(int(c // n_voters), int(c % n_voters),
                  Interval(float(estimate[p]), float(max(-1.0, estimate[p] - z * se[p])),
                           float(min(1.0, estimate[p] + z * se[p])), int(n[p])), float(agreement[p]))
        for p, c in enumerate(codes)
    ]
    return sorted(out, key=lambda r: (-r.kappa.n, r.voter_a, r.voter_b))


# -- per voter ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoterAgreement:
    """Arrays indexed by voter code; confusion matrices are [voter, true, said]."""

    votes: IntArray
    abstentions: IntArray
    gold_total: IntArray
    gold_correct: IntArray
    consensus_total: IntArray
    consensus_agree: IntArray
    confusion_gold: IntArray
    confusion_consensus: IntArray

    def gold_accuracy(self, v: int, confidence: float = 0.95) -> Interval:
        return wilson_interval(int(self.gold_correct[v]), int(self.gold_total[v]), confidence)

    def consensus_accuracy(self, v: int, confidence: float = 0.95) -> Interval:
        return wilson_interval(int(self.consensus_agree[v]), int(self.consensus_total[v]), confidence)


def voter_agreement(
    item: object, voter: object, label: object, *, n_voters: int, n_classes: int, gold: object, consensus: object,
) -> VoterAgreement:
    """Each voter against gold and against the consensus label (``gold``/``consensus`` hold one
    class code per item, -1 where unknown). The consensus includes the voter's own vote, so
    its agreement is optimistic for voters who carry much weight; gold is the honest measure."""
    i = np.asarray(item, dtype=np.int64)
    v = np.asarray(voter, dtype=np.int64)
    lab = np.asarray(label, dtype=np.int64)
    g = np.asarray(gold, dtype=np.int64)[i]
    c = np.asarray(consensus, dtype=np.int64)[i]
    answered = lab >= 0
    k2 = n_classes * n_classes

    def confusion(truth: IntArray) -> IntArray:
        m = answered & (truth >= 0)
        flat = v[m] * k2 + truth[m] * n_classes + lab[m]
        return np.bincount(flat, minlength=n_voters * k2).reshape(n_voters, n_classes, n_classes)

    cg, cc = confusion(g), confusion(c)
    return VoterAgreement(
        votes=np.bincount(v, minlength=n_voters),
        abstentions=np.bincount(v[~answered], minlength=n_voters),
        gold_total=cg.sum(axis=(1, 2)),
        gold_correct=np.trace(cg, axis1=1, axis2=2),
        consensus_total=cc.sum(axis=(1, 2)),
        consensus_agree=np.trace(cc, axis1=1, axis2=2),
        confusion_gold=cg,
        confusion_consensus=cc,
    )


# -- one group of voters against another (LLM vs human) ------------------------------------------


def group_majority(item: object, voter: object, label: object, member: object, n_items: int, n_classes: int) -> IntArray:
    """Per item, the label most voters of the group gave; -1 when none answered or on a tie."""
    i, v, lab = _cast(item, voter, label)
    m = np.asarray(member, dtype=bool)[v]
    counts = np.bincount(i[m] * n_classes + lab[m], minlength=n_items * n_classes).reshape(n_items, n_classes)
    top = counts.argmax(axis=1)
    best = counts.max(axis=1)
    ties = (counts == best[:, None]).sum(axis=1) > 1
    out: IntArray = np.where((best > 0) & ~ties, top, -1).astype(np.int64)
    return out


@dataclass(frozen=True)
class GroupAgreement:
    items: int  # items where both groups have a (untied) majority
    agreement: Interval  # share of those items where the majorities agree (Wilson)
    kappa: Interval  # Cohen's κ between the two majorities (bootstrap over items)
    per_voter: dict[int, Interval]  # each voter of group A against group B's majority


def group_agreement(
    item: object, voter: object, label: object, *, group_a: object, group_b: object, n_items: int, n_classes: int,
    n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
) -> GroupAgreement:
    """Agreement between two groups of voters (e.g. LLM labelers and human annotators):
    group majority against group majority per item, and each A voter against B's majority."""
    maj_a = group_majority(item, voter, label, group_a, n_items, n_classes)
    maj_b = group_majority(item, voter, label, group_b, n_items, n_classes)
    both = (maj_a >= 0) & (maj_b >= 0)
    a, b = maj_a[both], maj_b[both]
    n = int(both.sum())
    if n == 0:
        return GroupAgreement(0, NAN_INTERVAL, NAN_INTERVAL, {})
    agree = wilson_interval(int((a == b).sum()), n, confidence)
    cell = a * n_classes + b
    onehot = sparse.csr_matrix((np.ones(n), (np.arange(n), cell)), shape=(n, n_classes * n_classes))
    est = float(_kappa_from_confusion(np.asarray(onehot.sum(axis=0)).reshape(n_classes, n_classes)))
    samples = [_kappa_from_confusion(np.asarray((onehot.T @ w.T).T).reshape(-1, n_classes, n_classes))
               for w in bootstrap_weights(n, n_boot, seed)]
    kappa = percentile_interval(est, np.concatenate(samples), n, confidence)
    i, v, lab = _cast(item, voter, label)
    in_a = np.asarray(group_a, dtype=bool)[v] & (maj_b[i] >= 0)
    hits = np.bincount(v[in_a], weights=(lab[in_a] == maj_b[i[in_a]]).astype(np.float64))
    tots = np.bincount(v[in_a])
    per_voter = {int(x): wilson_interval(float(hits[x]), float(tots[x]), confidence) for x in np.flatnonzero(tots)}
    return GroupAgreement(n, agree, kappa, per_voter)


# -- Bayesian Truth Serum ----------------------------------------------------------------------


@dataclass(frozen=True)
class TruthSerum:
    """Per-vote scores (aligned with the votes given) and per-voter means (NaN: no scored vote)."""

    information: FloatArray
    prediction: FloatArray
    score: FloatArray
    voter_score: FloatArray
    voter_votes: IntArray


def bayesian_truth_serum(
    item: object, voter: object, answer: object, prediction: FloatArray, *, n_items: int, n_voters: int,
    alpha: float = 1.0, eps: float = 1e-3,
) -> TruthSerum:
    """Prelec's (2004) BTS for votes that came with a predicted distribution of others' answers.

    Per item, with x̄ the share of each answer and ȳ the geometric mean of the predictions:
    information score log(x̄[a] / ȳ[a]) (positive when the answer is more common than people
    predicted), prediction score α · Σ_k x̄[k] log(y[k] / x̄[k]) (≤ 0, best when the prediction
    matches the actual shares). Only votes with an answer and a prediction count, on items with
    at least two such votes; predictions are clipped at ``eps`` so a 0 is not −∞.
    """
    i = np.asarray(item, dtype=np.int64)
    v = np.asarray(voter, dtype=np.int64)
    a = np.asarray(answer, dtype=np.int64)
    y = np.asarray(prediction, dtype=np.float64)
    k = y.shape[1]
    ok = (a >= 0) & ~np.isnan(y).any(axis=1)
    n_per_item = np.bincount(i[ok], minlength=n_items)
    ok &= n_per_item[i] >= 2
    info = np.full(i.shape[0], np.nan)
    pred = np.full(i.shape[0], np.nan)
    if ok.any():
        ii, aa = i[ok], a[ok]
        yy = np.clip(y[ok], eps, None)
        yy = yy / yy.sum(axis=1, keepdims=True)
        xbar = np.bincount(ii * k + aa, minlength=n_items * k).reshape(n_items, k) / np.maximum(n_per_item, 1)[:, None]
        log_ybar = np.zeros((n_items, k))
        np.add.at(log_ybar, ii, np.log(yy))
        log_ybar /= np.maximum(n_per_item, 1)[:, None]
        info[ok] = np.log(xbar[ii, aa]) - log_ybar[ii, aa]
        x = xbar[ii]
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(x > 0, x * (np.log(yy) - np.log(np.where(x > 0, x, 1.0))), 0.0)
        pred[ok] = alpha * terms.sum(axis=1)
    score = info + pred
    scored = ~np.isnan(score)
    totals = np.bincount(v[scored], weights=score[scored], minlength=n_voters)
    counts = np.bincount(v[scored], minlength=n_voters)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
    return TruthSerum(info, pred, score, mean, counts)


def kappa_label(k: float) -> str:
    """Landis & Koch's words for a κ or α, for reports read by non-statisticians."""
    if math.isnan(k):
        return "-"
    for bound, word in ((0.0, "poor"), (0.2, "slight"), (0.4, "fair"), (0.6, "moderate"), (0.8, "substantial")):
        if k <= bound:
            return word
    return "almost perfect"
