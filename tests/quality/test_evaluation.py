"""Eval metrics on cases small enough to check by hand, and the paired comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmlabel.consensus import expected_calibration_error
from llmlabel.quality.evaluation import Predictions, compare, evaluate

NAN = math.nan
# five gold items of classes 0,0,1,1,2; the labeler says 0,1,1,(abstains),2
HAND = Predictions(truth=[0, 0, 1, 1, 2], label=[0, 1, 1, -1, 2], n_classes=3, confidence=[0.9, 0.8, 0.7, NAN, 0.6],
                   cost_usd=[0.01, 0.01, 0.02, 0.0, 0.01], latency_ms=[100, 200, 300, 400, 500])


def test_metrics_by_hand() -> None:
    m = evaluate(HAND, n_boot=200)
    assert m.n == 5 and m.answered == 4
    assert m.accuracy.estimate == pytest.approx(3 / 5)  # the abstention counts as wrong
    assert m.answered_accuracy.estimate == pytest.approx(3 / 4)
    assert m.abstention_rate.estimate == pytest.approx(1 / 5)
    # per class: 0 → P 1/1, R 1/2, F1 2/3; 1 → P 1/2, R 1/2, F1 1/2; 2 → P 1, R 1, F1 1
    pc = {c.code: c for c in m.per_class}
    assert (pc[0].precision, pc[0].recall, pc[0].f1) == pytest.approx((1.0, 0.5, 2 / 3))
    assert (pc[1].precision, pc[1].recall, pc[1].f1) == pytest.approx((0.5, 0.5, 0.5))
    assert (pc[2].support, pc[2].predicted, pc[2].f1) == (1, 1, 1.0)
    assert m.macro_f1.estimate == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    # ECE over the 4 answered: bins hold one item each: |1-.9| + |0-.8| + |1-.7| + |1-.6| over 4
    assert m.ece.estimate == pytest.approx((0.1 + 0.8 + 0.3 + 0.4) / 4)
    assert m.ece.n == 4
    assert m.cost_usd_total == pytest.approx(0.05) and m.cost_per_item.estimate == pytest.approx(0.01)
    assert m.latency_p50.estimate == 300 and m.latency_p95.estimate == 500
    assert m.confusion.tolist() == [[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]  # last column: abstained


def test_ece_matches_the_engines_ece() -> None:
    rng = np.random.default_rng(1)
    n = 400
    truth = rng.integers(0, 3, n)
    probs = rng.dirichlet([1, 1, 1], n)
    label = probs.argmax(axis=1)
    m = evaluate(Predictions(truth, label, 3, confidence=probs.max(axis=1)), n_boot=0)
    assert m.ece.estimate == pytest.approx(expected_calibration_error(probs, truth))


def test_intervals_cover_the_estimate_and_shrink_with_more_items() -> None:
    rng = np.random.default_rng(2)

    def run(n: int) -> Predictions:
        truth = rng.integers(0, 4, n)
        return Predictions(truth, np.where(rng.random(n) < 0.8, truth, (truth + 1) % 4), 4)

    small, large = evaluate(run(100), n_boot=300), evaluate(run(5000), n_boot=300)
    for m in (small, large):
        assert m.macro_f1.low <= m.macro_f1.estimate <= m.macro_f1.high
    assert (large.macro_f1.high - large.macro_f1.low) < (small.macro_f1.high - small.macro_f1.low) / 4


def test_compare_lists_flips_and_signs_deltas() -> None:
    b = Predictions(truth=[0, 0, 1, 1, 2], label=[0, 0, 1, 1, 0], n_classes=3, cost_usd=[0.02] * 5)
    c = compare(HAND, b, n_boot=200)
    assert c.fixed.tolist() == [1, 3]  # wrong (and abstained) in A, right in B
    assert c.broken.tolist() == [4]
    d = {x.metric: x for x in c.deltas}
    assert d["accuracy"].delta.estimate == pytest.approx(0.8 - 0.6)
    assert d["cost_per_item"].delta.estimate == pytest.approx(0.02 - 0.01)
    assert d["cost_per_item"].better == -1  # B costs more on every resample: clearly worse
    assert d["accuracy"].better == 0  # five items cannot tell
    assert math.isnan(d["ece"].b)  # B gave no confidences


def test_a_real_improvement_on_a_shared_gold_set_is_detected() -> None:
    rng = np.random.default_rng(3)
    n = 2000
    truth = rng.integers(0, 3, n)
    a = np.where(rng.random(n) < 0.80, truth, (truth + 1) % 3)
    b = a.copy()
    fix = np.flatnonzero(a != truth)[:60]  # B fixes 60 of A's mistakes and breaks 10 of its right answers
    b[fix] = truth[fix]
    brk = np.flatnonzero(a == truth)[:10]
    b[brk] = (truth[brk] + 2) % 3
    c = compare(Predictions(truth, a, 3), Predictions(truth, b, 3), n_boot=500)
    acc = next(d for d in c.deltas if d.metric == "accuracy")
    assert acc.delta.estimate == pytest.approx(50 / n)
    assert acc.better == 1 and acc.delta.low > 0
    assert len(c.fixed) == 60 and len(c.broken) == 10
    same = compare(Predictions(truth, a, 3), Predictions(truth, a, 3), n_boot=100)
    assert all(d.delta.estimate == 0 or math.isnan(d.delta.estimate) for d in same.deltas)


def test_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match="codes must be in"):
        Predictions([0, 3], [0, 0], 3)
    with pytest.raises(ValueError, match="same gold items"):
        compare(HAND, Predictions([1, 0, 1, 1, 2], [0] * 5, 3))
    empty = evaluate(Predictions([], [], 3))
    assert empty.n == 0 and math.isnan(empty.accuracy.estimate)
