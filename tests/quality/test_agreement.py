"""Agreement statistics against published examples, the krippendorff package, and hand sums."""

from __future__ import annotations

import math

import krippendorff
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlabel.quality import agreement as agr
from llmlabel.quality.intervals import bootstrap_weights, poisson_binomial_interval, wilson_interval

# The krippendorff package's own docstring example (Krippendorff 2011, nominal 0.691, interval 0.811).
KRIPP_COUNTS = np.array([
    [1, 0, 0, 0], [0, 0, 0, 0], [0, 2, 0, 0], [2, 0, 0, 0], [0, 0, 2, 0], [0, 0, 2, 1], [0, 0, 0, 3], [1, 0, 1, 0],
    [0, 2, 0, 0], [2, 0, 0, 0], [2, 0, 0, 0], [0, 0, 2, 0], [0, 0, 2, 0], [0, 0, 0, 0], [0, 0, 1, 1],
])
# Wikipedia, "Fleiss' kappa": 10 subjects, 14 raters, 5 categories; P̄ = 0.378, P_e = 0.213, κ = 0.210.
FLEISS_WIKI = np.array([
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
])


def test_krippendorff_package_example_nominal_and_interval() -> None:
    nominal = agr.krippendorff_alpha(KRIPP_COUNTS, level="nominal", n_boot=200)
    interval = agr.krippendorff_alpha(KRIPP_COUNTS, level="interval", values=np.array([1.0, 2, 3, 4]), n_boot=200)
    assert nominal.estimate == pytest.approx(0.691358, abs=1e-6)
    assert interval.estimate == pytest.approx(0.810845, abs=1e-6)
    assert nominal.n == 12  # units with two or more values
    assert nominal.low <= nominal.estimate <= nominal.high


@pytest.mark.parametrize("level", ["nominal", "interval"])
def test_the_bootstrap_formula_is_the_packages_formula(level: str) -> None:
    """The per-item decomposition behind the bootstrap gives the package's α on any resample."""
    from scipy import sparse

    rng = np.random.default_rng(3)
    counts = rng.integers(0, 3, size=(200, 4))
    pair = agr._pairable(sparse.csr_matrix(counts, dtype=np.float64))
    values = np.array([1.0, 2.0, 4.0, 7.0])
    parts, by_class = agr._alpha_parts(pair, level, values)  # type: ignore[arg-type]
    for w in bootstrap_weights(pair.shape[0], 5, seed=1):
        for row in w:
            totals = np.asarray(by_class.T @ row)[None, :] if by_class is not None else None
            ours = agr._alpha_from_sums((row @ parts)[None, :], totals, level)[0]  # type: ignore[arg-type]
            dense = np.repeat(pair.toarray(), row.astype(int), axis=0)
            theirs = krippendorff.alpha(value_counts=dense, value_domain=values, level_of_measurement=level)
            assert ours == pytest.approx(theirs, abs=1e-9)


def test_fleiss_kappa_wikipedia_example() -> None:
    k = agr.fleiss_kappa(FLEISS_WIKI, n_boot=300)
    assert k.estimate == pytest.approx(0.2099, abs=1e-4)
    assert k.n == 10 and k.low < k.estimate < k.high


def test_alpha_and_fleiss_together_equal_each_apart() -> None:
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 3, size=(300, 3))
    a, f = agr.alpha_and_fleiss(counts, n_boot=200, seed=7)
    assert a == agr.krippendorff_alpha(counts, n_boot=200, seed=7)
    assert f == agr.fleiss_kappa(counts, n_boot=200, seed=7)


def test_cohen_kappa_by_hand() -> None:
    # Wikipedia's two readers of 50 proposals: yes/yes 20, yes/no 5, no/yes 10, no/no 15.
    a = [0] * 20 + [0] * 5 + [1] * 10 + [1] * 15
    b = [0] * 20 + [1] * 5 + [0] * 10 + [1] * 15
    # pₒ = 35/50 = 0.7, pₑ = 0.5·0.6 + 0.5·0.4 = 0.5, κ = 0.2/0.5
    assert agr.cohen_kappa(a, b, 2) == pytest.approx(0.4)
    assert agr.cohen_kappa([0, 1, -1], [0, 1, 1], 2) == pytest.approx(1.0)  # the abstention is dropped


def test_pairwise_kappa_finds_every_pair_with_enough_shared_items() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 300)
    item, voter, label = [], [], []
    for i, t in enumerate(truth):
        for v in (0, 1, 2):
            good = v != 2  # voter 2 answers at random
            item.append(i)
            voter.append(v)
            label.append(int(t) if good and rng.random() < 0.9 else int(rng.integers(0, 3)))
    pairs = agr.pairwise_kappa(item, voter, label, n_voters=3, n_classes=3, n_boot=100)
    by = {(p.voter_a, p.voter_b): p for p in pairs}
    assert set(by) == {(0, 1), (0, 2), (1, 2)}
    assert all(p.kappa.n == 300 for p in pairs)
    assert by[(0, 1)].kappa.estimate > 0.7 > by[(0, 2)].kappa.high
    a, b = np.array(label).reshape(300, 3)[:, 0], np.array(label).reshape(300, 3)[:, 1]
    assert by[(0, 1)].kappa.estimate == pytest.approx(agr.cohen_kappa(a, b, 3))
    # the large-sample interval, used for millions of votes, agrees with the bootstrap here
    normal = {(p.voter_a, p.voter_b): p for p in agr.pairwise_kappa(item, voter, label, n_voters=3, n_classes=3,
                                                                    n_boot=100, max_cells=0)}
    assert normal[(0, 1)].kappa.low == pytest.approx(by[(0, 1)].kappa.low, abs=0.03)
    assert agr.pairwise_kappa(item, voter, label, n_voters=3, n_classes=3, min_shared=301) == []


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 19), st.integers(0, 4), st.integers(-1, 2)), min_size=10, max_size=80),
       st.permutations(range(5)))
def test_alpha_does_not_depend_on_voter_ids(rows: list[tuple[int, int, int]], perm: list[int]) -> None:
    item = np.array([r[0] for r in rows])
    voter = np.array([r[1] for r in rows])
    label = np.array([r[2] for r in rows])
    a = agr.krippendorff_alpha(agr.value_counts(item, label, 20, 3), n_boot=0)
    b = agr.krippendorff_alpha(agr.value_counts(item, label, 20, 3)[np.random.default_rng(0).permutation(20)], n_boot=0)
    assert (math.isnan(a.estimate) and math.isnan(b.estimate)) or a.estimate == pytest.approx(b.estimate)
    k1 = agr.voter_agreement(item, voter, label, n_voters=5, n_classes=3, gold=np.zeros(20, dtype=int),
                             consensus=-np.ones(20, dtype=int))
    k2 = agr.voter_agreement(item, np.array(perm)[voter], label, n_voters=5, n_classes=3, gold=np.zeros(20, dtype=int),
                             consensus=-np.ones(20, dtype=int))
    assert np.array_equal(k1.gold_correct, k2.gold_correct[perm])


def test_per_voter_accuracy_and_confusion_by_hand() -> None:
    # items 0..3, gold 0,1,2,-; consensus 0,1,1,2
    item = [0, 1, 2, 3, 0, 1, 2]
    voter = [0, 0, 0, 0, 1, 1, 1]
    label = [0, 1, 1, 2, 0, -1, 2]
    r = agr.voter_agreement(item, voter, label, n_voters=2, n_classes=3, gold=[0, 1, 2, -1], consensus=[0, 1, 1, 2])
    assert r.votes.tolist() == [4, 3] and r.abstentions.tolist() == [0, 1]
    assert r.gold_total.tolist() == [3, 2] and r.gold_correct.tolist() == [2, 2]
    assert r.consensus_total.tolist() == [4, 2] and r.consensus_agree.tolist() == [4, 1]
    assert r.confusion_gold[0].tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]
    assert r.gold_accuracy(0).estimate == pytest.approx(2 / 3)


def test_llm_majority_against_human_majority() -> None:
    # voters 0,1 are LLMs, 2,3,4 humans; item 2 has a human tie and is skipped
    item = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    voter = [0, 1, 2, 3, 0, 2, 3, 4, 0, 2, 3, 1, 2, 4]
    label = [1, 1, 1, 1, 0, 2, 2, 0, 1, 0, 1, 2, 2, 2]
    g = agr.group_agreement(item, voter, label, group_a=[1, 1, 0, 0, 0], group_b=[0, 0, 1, 1, 1], n_items=4,
                            n_classes=3, n_boot=100)
    assert g.items == 3  # items 0, 1, 3
    assert g.agreement.estimate == pytest.approx(2 / 3)  # item 1: LLM 0 vs human 2
    assert g.per_voter[0].estimate == pytest.approx(0.5) and g.per_voter[1].estimate == pytest.approx(1.0)


def test_bayesian_truth_serum_by_hand() -> None:
    # one item, three respondents: answers 0, 0, 1; predicted shares of answer 0: 0.5, 0.8, 0.4
    pred = np.array([[0.5, 0.5], [0.8, 0.2], [0.4, 0.6]])
    r = agr.bayesian_truth_serum([0, 0, 0], [0, 1, 2], [0, 0, 1], pred, n_items=1, n_voters=3)
    xbar = np.array([2 / 3, 1 / 3])
    ybar = np.array([(0.5 * 0.8 * 0.4) ** (1 / 3), (0.5 * 0.2 * 0.6) ** (1 / 3)])
    assert r.information.tolist() == pytest.approx([math.log(xbar[0] / ybar[0])] * 2 + [math.log(xbar[1] / ybar[1])])
    expected_pred = [float((xbar * np.log(p / xbar)).sum()) for p in pred]
    assert r.prediction.tolist() == pytest.approx(expected_pred)
    # "surprisingly common" answer 0 (2/3 gave it, predicted 0.54) scores above the other one
    assert r.information[0] > 0 > r.information[2]
    assert r.voter_score.tolist() == pytest.approx((r.information + r.prediction).tolist())
    # a prediction equal to the actual shares is the best possible prediction score (0)
    exact = agr.bayesian_truth_serum([0, 0, 0], [0, 1, 2], [0, 0, 1], np.tile(xbar, (3, 1)), n_items=1, n_voters=3)
    assert exact.prediction.tolist() == pytest.approx([0.0] * 3, abs=1e-12)


def test_truth_serum_needs_two_predictions_per_item() -> None:
    pred = np.array([[0.5, 0.5], [np.nan, np.nan], [0.9, 0.1]])
    r = agr.bayesian_truth_serum([0, 0, 1], [0, 1, 2], [0, 1, 0], pred, n_items=2, n_voters=3)
    assert np.isnan(r.score).all() and r.voter_votes.tolist() == [0, 0, 0]


def test_intervals_by_hand() -> None:
    w = wilson_interval(8, 10)  # textbook: 0.8 → [0.490, 0.943]
    assert (w.low, w.high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    exact = poisson_binomial_interval(np.full(20, 0.5))  # Binomial(20, ½): 2.5% quantiles 6 and 14
    assert exact.estimate == 0.5 and (exact.low, exact.high) == (6 / 20, 14 / 20)
    big = poisson_binomial_interval(np.full(10_000, 0.9))
    assert big.low == pytest.approx(0.9 - 1.96 * math.sqrt(0.09 / 10_000), abs=1e-4)
    sums = np.concatenate(list(bootstrap_weights(7, 30, seed=2))).sum(axis=1)
    assert sums.tolist() == [7.0] * 30


def test_interval_alpha_is_offered_for_numeric_classes() -> None:
    from llmlabel.quality.summary import numeric_values

    assert numeric_values(["1", "2", "5"]).tolist() == [1.0, 2.0, 5.0]  # type: ignore[union-attr]
    assert numeric_values(["positive", "negative"]) is None
