import numpy as np

from llmlabel.consensus import DawidSkene, Gold, Votes, correlation_weights, error_phi
from llmlabel.simulate import Population, simulate_votes


def with_copy(votes: Votes, source: int) -> Votes:
    m = votes.voter == source
    return Votes(
        np.r_[votes.item, votes.item[m]],
        np.r_[votes.voter, np.full(m.sum(), votes.n_voters)],
        np.r_[votes.label, votes.label[m]],
        votes.n_items,
        votes.n_voters + 1,
        votes.n_classes,
    )


def test_copied_voter_is_halved_independent_ones_are_not():
    sim = simulate_votes(
        2000,
        3,
        [Population(30, per_item=3), Population(3, "llm", per_item=3, accuracy=(6, 3))],
        seed=5,
    )
    votes = with_copy(sim.votes, 30)
    gold = Gold(np.arange(800), sim.truth[:800])
    w = correlation_weights(votes, gold)
    np.testing.assert_allclose(w[[30, 33]], 0.5, atol=0.05)
    assert np.all(w[31:33] > 0.95)
    assert np.all(w[:30] > 0.95)
    v, u, phi, n = error_phi(votes, gold)
    copy_pair = (v == 30) & (u == 33)
    assert phi[copy_pair][0] > 0.99 and n[copy_pair][0] == 800


def test_damping_stops_a_copied_voter_from_outvoting_the_rest():
    votes = Votes(  # item 0: voter 0 says 1 (and is copied twice), voters 3, 4 say 0
        np.zeros(5, dtype=np.int64), np.arange(5), np.array([1, 1, 1, 0, 0]), 1, 5, 2
    )
    model = DawidSkene().fit(votes)
    undamped = model.predict_proba(votes)[0]
    damped = DawidSkene().fit(votes, weights=np.array([1 / 3, 1 / 3, 1 / 3, 1, 1]))
    assert undamped.argmax() == 1 and damped.posteriors_[0].argmax() == 0
