import numpy as np

from llmlabel.consensus import (
    DawidSkene,
    Gold,
    IsotonicCalibration,
    TemperatureScaling,
    calibrate,
    expected_calibration_error,
    reliability_table,
)
from llmlabel.consensus.calibration import bootstrap_ece
from llmlabel.simulate import Population, simulate_votes


def sampled(n: int, sharpness: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities whose truth is drawn from softmax(logits), then sharpened by 1/T."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, 3))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    truth = (rng.random(n)[:, None] > p.cumsum(1)).sum(1)
    sharp = np.exp(logits * sharpness)
    return sharp / sharp.sum(1, keepdims=True), truth


def test_ece_and_table_by_hand():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    truth = np.array([0, 1, 0, 0])
    # bin (0.8, 0.9]: conf 0.9, acc 0.5; bin (0.5, 0.6]: conf 0.6, acc 1.0
    assert abs(expected_calibration_error(probs, truth) - 0.4) < 1e-12
    rows = reliability_table(probs, truth).rows()
    assert [(n, round(c, 2), a) for _, _, n, c, a in rows] == [(2, 0.6, 1.0), (2, 0.9, 0.5)]


def test_temperature_recovers_overconfidence():
    probs, truth = sampled(20000, sharpness=3.0)
    cal = TemperatureScaling().fit(probs, truth)
    assert abs(cal.temperature_ - 3.0) < 0.2
    assert expected_calibration_error(cal.transform(probs), truth) < 0.015
    assert expected_calibration_error(probs, truth) > 0.1


def test_isotonic_is_monotone_and_fixes_top_label():
    probs, truth = sampled(20000, sharpness=3.0, seed=1)
    cal = IsotonicCalibration().fit(probs, truth)
    out = cal.transform(probs)
    np.testing.assert_allclose(out.sum(1), 1.0)
    assert np.array_equal(out.argmax(1), probs.argmax(1))
    assert np.all(np.diff(cal.y_) >= 0) and np.all(np.diff(cal.x_) > 0)
    assert expected_calibration_error(out, truth) < 0.02


def test_bootstrap_interval_contains_estimate():
    probs, truth = sampled(300, sharpness=1.0)
    est, lo, hi = bootstrap_ece(probs, truth)
    assert lo <= est <= hi + 0.02


def test_calibrate_measures_and_repairs_correlated_voters():
    # Voters copy each other's mistakes (one shared "hard" vote per item), so naive DS is
    # over-confident; held-out gold must show it and the chosen repair must reduce it.
    base = simulate_votes(3000, 2, [Population(30, per_item=5, accuracy=(5, 3))], seed=4)
    v = base.votes
    dup = v.subset(np.arange(len(v)) % 5 == 0)
    from llmlabel.consensus import Votes

    votes = Votes(
        np.r_[v.item, dup.item, dup.item],
        np.r_[v.voter, dup.voter + 30, dup.voter + 60],
        np.r_[v.label, dup.label, dup.label],
        v.n_items,
        90,
        2,
    )
    gold = Gold(np.arange(1000), base.truth[:1000])
    report = calibrate(DawidSkene(), votes, gold, prefixes=0)
    assert report.ece_before > 0.03
    assert report.method != "none"
    assert report.ece_after < report.ece_before / 2
    assert report.n_items == 1000
