import numpy as np
import pytest
from tests.consensus.shadows import with_shadow_copies

from llmlabel.consensus import (
    ConsensusInputError,
    DawidSkene,
    Gold,
    IsotonicCalibration,
    TemperatureScaling,
    VoteCountIsotonic,
    VoteCountTemperature,
    calibrate,
    expected_calibration_error,
    reliability_table,
)
from llmlabel.consensus.calibration import (
    bootstrap_ece,
    choose_calibration,
    prefix_posteriors,
    stratified_ece,
)
from llmlabel.consensus.em import softmax_rows
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
    votes = with_shadow_copies(v, v.subset(np.arange(len(v)) % 5 == 0), 30)
    gold = Gold(np.arange(1000), base.truth[:1000])
    report = calibrate(DawidSkene(), votes, gold, prefixes=0)
    assert report.ece_before > 0.03
    assert report.method != "none"
    assert report.ece_after < report.ece_before / 2
    assert report.n_items == 1000


def counted(n: int, a: float, b: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posteriors whose evidence grows like n votes, truth drawn at temperature exp(a)·n^b."""
    rng = np.random.default_rng(seed)
    n_votes = rng.integers(1, 21, n)
    logits = rng.normal(0, 1.0, (n, 3)) * n_votes[:, None]
    t = np.exp(a + b * np.log(n_votes))
    p = np.exp(logits / t[:, None])
    p /= p.sum(1, keepdims=True)
    truth = (rng.random(n)[:, None] > p.cumsum(1)).sum(1)
    raw = np.exp(logits - logits.max(1, keepdims=True))
    return raw / raw.sum(1, keepdims=True), truth, n_votes


def test_vote_temperature_recovers_growth_with_votes():
    probs, truth, n_votes = counted(20000, a=0.2, b=0.6)
    cal = VoteCountTemperature().fit(probs, truth, n_votes)
    assert abs(cal.a_ - 0.2) < 0.1
    assert abs(cal.b_ - 0.6) < 0.05
    fixed = cal.transform(probs, n_votes)
    np.testing.assert_allclose(fixed.sum(1), 1.0)
    assert stratified_ece(fixed, truth, n_votes) < 0.02
    # One temperature for all counts cannot fix every stratum.
    one = TemperatureScaling().fit(probs, truth).transform(probs)
    assert stratified_ece(one, truth, n_votes) > 2 * stratified_ece(fixed, truth, n_votes)


def test_stratified_ece_is_ece_with_one_count():
    probs, truth = sampled(2000, sharpness=2.0)
    same = np.full(2000, 7)
    assert stratified_ece(probs, truth, same) == expected_calibration_error(probs, truth)


def test_choose_calibration_takes_vote_temperature_only_with_counts():
    probs, truth, n_votes = counted(6000, a=0.0, b=0.7, seed=3)
    blind = choose_calibration(probs, truth)
    assert "vote-temperature" not in blind.ece_by_method
    aware = choose_calibration(probs, truth, n_votes=n_votes)
    assert aware.method == "vote-temperature"
    assert aware.needs_votes and not blind.needs_votes
    assert aware.ece_after == min(aware.ece_by_method.values())
    with pytest.raises(ConsensusInputError, match="n_votes"):
        aware.transform(probs)
    with pytest.raises(ConsensusInputError, match="n_votes has 3 entries"):
        aware.transform(probs, n_votes[:3])
    np.testing.assert_allclose(blind.transform(probs, n_votes), blind.transform(probs))
    with pytest.raises(ConsensusInputError, match="needs n_votes"):
        choose_calibration(probs, truth, methods=("none", "vote-temperature"))


def test_prefix_posteriors_walk_every_vote_of_each_item():
    sim = simulate_votes(300, 3, [Population(10, per_item=6)], seed=5)
    model = DawidSkene().fit(sim.votes)
    items = np.arange(100, 300)
    probs, n, owner = prefix_posteriors(model, sim.votes, items, np.random.default_rng(0))
    assert probs.shape == (200 * 6, 3)
    # each item once at every count from 1 to its six votes
    assert (np.bincount(owner * 6 + n - 1) == 1).all()
    again = prefix_posteriors(model, sim.votes, items, np.random.default_rng(0))
    np.testing.assert_allclose(probs, again[0])
    whole = n == 6  # a prefix holding every vote is the all-vote posterior
    np.testing.assert_allclose(
        probs[whole], model.predict_proba(sim.votes)[items[owner[whole]]], atol=1e-9
    )
    # a prefix holding one vote is the posterior from one of the item's votes alone
    by_vote = softmax_rows(np.log(model.class_prior_) + model.vote_log_likelihood(sim.votes))
    for row in np.flatnonzero(n == 1):
        own = by_vote[sim.votes.item == items[owner[row]]]
        assert np.isclose(own, probs[row], atol=1e-9).all(axis=1).any()


def test_every_calibrator_is_one_registry_entry_with_one_signature():
    from llmlabel.consensus.calibration import CALIBRATORS

    probs, truth, n_votes = counted(3000, a=0.3, b=0.5, seed=7)
    for name, make in CALIBRATORS.items():
        cal = make().fit(probs, truth, n_votes)
        assert cal.name == name
        out = cal.transform(probs, n_votes)
        np.testing.assert_allclose(out.sum(1), 1.0)
        if not cal.needs_votes:  # the others ignore the counts
            np.testing.assert_allclose(cal.transform(probs), out)


def test_vote_temperature_with_one_count_is_temperature():
    # log T = a + b·log n with n constant is one temperature: both fits must agree.
    probs, truth = sampled(5000, sharpness=2.5, seed=2)
    same = np.full(5000, 4)
    one = TemperatureScaling().fit(probs, truth)
    by_count = VoteCountTemperature().fit(probs, truth, same)
    assert abs(np.exp(by_count.a_ + by_count.b_ * np.log(4)) - one.temperature_) < 0.01
    np.testing.assert_allclose(by_count.transform(probs, same), one.transform(probs), atol=2e-3)


def test_vote_isotonic_maps_each_single_vote_posterior_to_its_own_rate():
    # After one vote the posterior takes two values here: 0.94 for label 0, right 91% of the
    # time, and 0.80 for label 1, right 80%; after eight votes 0.999, right 96%. One temperature
    # per count cannot lower the first without the second; a map per stratum fits both.
    rng = np.random.default_rng(3)
    n = 4000
    said = rng.integers(0, 2, n)
    many = rng.random(n) < 0.5
    top = np.where(many, 0.999, np.where(said == 0, 0.94, 0.80))
    rate = np.where(many, 0.96, np.where(said == 0, 0.91, 0.80))
    probs = np.where(said[:, None] == np.arange(2), top[:, None], 1 - top[:, None])
    truth = np.where(rng.random(n) < rate, said, 1 - said)
    n_votes = np.where(many, 8, 1)
    iso = VoteCountIsotonic().fit(probs, truth, n_votes)
    out = iso.transform(probs, n_votes).max(axis=1)
    for rows in (~many & (said == 0), ~many & (said == 1), many):
        np.testing.assert_allclose(out[rows], (truth[rows] == said[rows]).mean(), atol=1e-6)
    vt = VoteCountTemperature().fit(probs, truth, n_votes).transform(probs, n_votes).max(axis=1)
    single_0 = ~many & (said == 0)
    assert vt[single_0].mean() - (truth[single_0] == 0).mean() > 0.01


def test_vote_isotonic_borrows_the_nearest_stratum_with_rows():
    probs, truth = sampled(400, sharpness=2.0, seed=4)
    counts = np.full(400, 5)  # stratum 2 (4–7) only
    counts[:20] = 1  # too few rows for a map of their own
    iso = VoteCountIsotonic().fit(probs, truth, counts)
    assert iso.strata_.tolist() == [2]
    for n in (1, 2, 40):  # below, between and above: all fall back to the one map
        np.testing.assert_allclose(
            iso.transform(probs, np.full(400, n)), iso.transform(probs, np.full(400, 5))
        )
    few = VoteCountIsotonic().fit(probs[:30], truth[:30], counts[:30])
    assert few.strata_.tolist() == [0] and len(few.maps_) == 1  # no stratum has 50: one map
