import time

import numpy as np
import pytest

from llmlabel.consensus import (
    ABSTAIN,
    Bands,
    ConsensusInputError,
    DawidSkene,
    Gold,
    VoterKinds,
    Votes,
)
from llmlabel.simulate import Population, simulate_votes


def toy() -> Votes:
    # Three items, two classes; voters 0 and 1 agree everywhere, voter 2 dissents on item 2.
    return Votes(
        item=np.array([0, 0, 1, 1, 2, 2, 2]),
        voter=np.array([0, 1, 0, 1, 0, 1, 2]),
        label=np.array([0, 0, 1, 1, 1, 1, 0]),
        n_items=3,
        n_voters=3,
        n_classes=2,
    )


def test_posterior_is_prior_times_confusion_columns_by_hand():
    votes = toy()
    model = DawidSkene().fit(votes)
    pi = model.confusion_[:, 0]  # band 0: no stated confidence
    expected = model.class_prior_ * pi[0, :, 1] * pi[1, :, 1] * pi[2, :, 0]
    expected /= expected.sum()
    np.testing.assert_allclose(model.predict_proba(votes)[2], expected)
    np.testing.assert_allclose(model.posteriors_[2], expected, atol=1e-6)
    assert model.predict(votes).tolist() == [0, 1, 1]


def test_update_equals_refit_free_prediction_with_the_extra_vote():
    votes = toy()
    model = DawidSkene().fit(votes)
    row = model.predict_proba(votes.subset(votes.item != 2))[2]  # item 2 without votes
    for voter, label in [(0, 1), (1, 1), (2, 0)]:
        row = model.update(row, voter, label)
    np.testing.assert_allclose(row, model.predict_proba(votes)[2])
    np.testing.assert_allclose(model.update(row, 0, ABSTAIN), row)


def test_abstentions_are_counted_not_evidence():
    votes = toy()
    with_abstain = Votes(
        np.r_[votes.item, 0], np.r_[votes.voter, 2], np.r_[votes.label, ABSTAIN], 3, 3, 2
    )
    a, b = DawidSkene().fit(votes), DawidSkene().fit(with_abstain)
    np.testing.assert_allclose(a.posteriors_, b.posteriors_)
    assert b.abstentions_.tolist() == [0, 0, 1]


def test_gold_clamps_and_supervises():
    votes = toy()
    gold = Gold(np.array([2]), np.array([0]))
    model = DawidSkene().fit(votes, gold)
    assert model.posteriors_[2].tolist() == [1.0, 0.0]
    # Voter 2 was right on gold where 0 and 1 were wrong: it must now look more reliable.
    assert model.confusion_[2, 0, 0, 0] > model.confusion_[0, 0, 0, 0]
    assert model.predict_proba(votes, gold)[2].tolist() == [1.0, 0.0]


def test_recovers_known_confusion_matrices():
    sim = simulate_votes(
        4000, 3, [Population(12, per_item=5, accuracy=(6, 3), error_concentration=0.5)], seed=3
    )
    model = DawidSkene().fit(sim.votes)
    fitted = model.confusion_[:, 0]
    assert np.abs(fitted - sim.confusion).max() < 0.06
    assert (model.predict(sim.votes) == sim.truth).mean() > 0.9


def test_new_and_sparse_voters_start_at_their_kind():
    sim = simulate_votes(
        3000,
        2,
        [
            Population(20, per_item=3, accuracy=(9, 1)),
            Population(5, "llm", per_item=1, accuracy=(3, 3)),
        ],
        seed=1,
    )
    model = DawidSkene().fit(sim.votes, kinds=sim.kinds)
    human, llm = model.kind_matrices()[0], model.kind_matrices()[2]
    assert np.trace(human) > np.trace(llm) + 0.4
    # A voter never seen at fit time (code beyond the fitted range) votes like its kind.
    newcomer = Votes(np.array([0]), np.array([30]), np.array([1]), 1, 31, 2)
    kinds = VoterKinds(np.r_[sim.kinds.kind, np.full(6, 2)])
    post = model.predict_proba(newcomer, kinds=kinds)[0]
    expected = model.class_prior_ * llm[:, 1]
    np.testing.assert_allclose(post, expected / expected.sum())


def test_one_coin_fallback_below_threshold():
    votes = Votes(np.array([0, 1, 1]), np.array([0, 0, 1]), np.array([1, 0, 0]), 2, 2, 3)
    model = DawidSkene(one_coin_below=5).fit(votes)
    assert model.one_coin_[:, 0].all()
    m = model.confusion_[0, 0]
    np.testing.assert_allclose(np.diag(m), m[0, 0])  # one accuracy for every class


def one_vote_voters(
    n_items: int, per_item: int, accuracy: float, seed: int
) -> tuple[Votes, np.ndarray]:
    """Every vote from a voter of its own (as on amazon_negative and sst2_crowd)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n_items)
    item = np.repeat(np.arange(n_items), per_item)
    right = rng.random(item.shape[0]) < accuracy
    label = np.where(right, truth[item], 1 - truth[item])
    n = item.shape[0]
    return Votes(item, np.arange(n), label, n_items, n, 2), truth


def test_one_vote_voters_get_their_kinds_accuracy_and_em_settles_fast():
    votes, truth = one_vote_voters(800, 5, 0.8, seed=3)
    model = DawidSkene(tol=1e-9).fit(votes)
    # A single vote says nothing about its voter that is not circular: every such voter
    # carries its kind's accuracy, whichever way it voted.
    diag = model.confusion_[:, 0, [0, 1], [0, 1]]
    np.testing.assert_allclose(diag, diag[0][None, :].repeat(len(diag), axis=0))
    assert abs(diag[0, 0] - 0.8) < 0.03
    # With nothing per voter left to feed back into itself, EM settles in a few steps, and
    # the posterior is the majority vote's, by the count of agreeing votes.
    assert model.n_iter_ <= 8
    agree = np.bincount(votes.item, votes.label == 1, minlength=800)
    assert ((model.posteriors_[:, 1] > 0.5) == (agree >= 3)).all()
    assert (model.posteriors_.argmax(1) == truth).mean() > 0.9


def test_confidence_bands_learn_calibration_from_gold():
    sim = simulate_votes(
        3000,
        2,
        [Population(10, per_item=3), Population(1, "llm", per_item=1, confident=True)],
        seed=2,
    )
    gold = Gold(np.arange(1000), sim.truth[:1000])
    model = DawidSkene(bands=Bands((0.6, 0.8, 0.9))).fit(sim.votes, gold, sim.kinds)
    llm = model.confusion_[10]
    used = model.vote_counts_[10] > 50
    acc = np.array([np.trace(m) / 2 for m in llm])[used]
    assert np.all(np.diff(acc) > 0), acc  # higher stated confidence, more reliable band


def test_fit_100k_votes_well_under_a_second():
    sim = simulate_votes(
        20000,
        4,
        [Population(300, per_item=4), Population(3, "llm", per_item=1, confident=True)],
        seed=0,
    )
    assert len(sim.votes) == 100_000
    DawidSkene().fit(sim.votes, kinds=sim.kinds)  # warm-up
    start = time.perf_counter()
    DawidSkene().fit(sim.votes, kinds=sim.kinds)
    assert time.perf_counter() - start < 1.0


def test_errors():
    with pytest.raises(ConsensusInputError, match="not fitted"):
        DawidSkene().predict_proba(toy())
    with pytest.raises(ConsensusInputError, match="weights"):
        DawidSkene().fit(toy(), weights=np.array([1.0, 0.0, 1.0]))


def test_vote_index_steps_match_direct_sums():
    from llmlabel.consensus.em import VoteIndex

    rng = np.random.default_rng(0)
    item, voter, label = rng.integers(0, 50, 400), rng.integers(0, 7, 400), rng.integers(0, 3, 400)
    scale = np.array([1.0, 0.5, 1.0, 0.25, 1.0, 1.0, 0.8])
    weight = rng.random(50)
    index = VoteIndex.build(voter, label, item, 50, 3, item_weight=weight, scale=scale[voter])
    log_pi = np.log(rng.dirichlet(np.ones(3), size=(3, 7)).transpose(0, 2, 1))  # [true, said, v]
    direct = np.zeros((50, 3))
    np.add.at(direct, item, scale[voter][:, None] * log_pi[:, label, voter].T)
    np.testing.assert_allclose(index.evidence(log_pi), direct)
    truth = rng.dirichlet(np.ones(3), size=50)
    counts = np.zeros((3, 3, 7))
    np.add.at(counts, (slice(None), label, voter), (weight[item][:, None] * truth[item]).T)
    np.testing.assert_allclose(index.counts(truth, 7), counts)


def test_vote_patterns_group_exactly_the_items_with_the_same_votes():
    from llmlabel.consensus.em import VotePatterns

    rng = np.random.default_rng(1)
    n_items = 300
    item = np.repeat(np.arange(n_items), rng.integers(0, 4, n_items))
    code = rng.integers(0, 5, item.shape[0])  # few codes: many items share a multiset
    alone = np.array([3, 10, 11], dtype=np.int64)
    p = VotePatterns.build(code, 5, item, n_items, alone)
    multiset = [tuple(sorted(code[item == i])) for i in range(n_items)]
    for i in range(n_items):
        for j in range(i + 1, n_items):
            same = multiset[i] == multiset[j] and i not in alone and j not in alone
            assert (p.of_item[i] == p.of_item[j]) == same
    assert p.first.tolist() == sorted(np.unique(p.of_item, return_index=True)[1].tolist())
    assert p.count.tolist() == np.bincount(p.of_item).tolist()
    assert p.n_patterns < n_items / 3


def test_fitting_per_pattern_equals_fitting_per_item(monkeypatch: pytest.MonkeyPatch):
    """EM over distinct vote patterns (weighted by how many items share each) is the same
    computation as EM over every item."""
    from llmlabel.consensus import em

    sim = simulate_votes(3000, 3, [Population(4, per_item=2), Population(2, "llm", per_item=1)])
    gold = Gold(np.arange(0, 3000, 7), sim.truth[::7])
    fits = [DawidSkene().fit(sim.votes, g, sim.kinds) for g in (None, gold)]
    assert len(np.unique(fits[0].posteriors_[:, 0])) < 600  # few patterns, many items
    assert min(f.n_iter_ for f in fits) > 3  # enough EM steps for a difference to show

    def every_item_alone(
        code: object, n_codes: int, item: object, n_items: int, alone: object
    ) -> em.VotePatterns:
        return em.VotePatterns(np.arange(n_items), np.arange(n_items), np.ones(n_items))

    monkeypatch.setattr(em.VotePatterns, "build", every_item_alone)
    for g, fit in zip((None, gold), fits, strict=True):
        per_item = DawidSkene().fit(sim.votes, g, sim.kinds)
        assert per_item.n_iter_ == fit.n_iter_
        np.testing.assert_allclose(per_item.posteriors_, fit.posteriors_, rtol=0, atol=1e-12)
        np.testing.assert_allclose(per_item.confusion_, fit.confusion_, rtol=1e-12)
        np.testing.assert_allclose(per_item.class_prior_, fit.class_prior_, rtol=1e-12)
