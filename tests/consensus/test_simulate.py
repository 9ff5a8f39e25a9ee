import itertools

import numpy as np
from tests.consensus.shadows import with_shadow_copies

from llmlabel.consensus import DawidSkene, Gold, Policy, VoterKinds, calibrate
from llmlabel.consensus.calibration import VOTE_COUNT_METHODS
from llmlabel.consensus.em import softmax_rows
from llmlabel.simulate import Population, simulate_policy, simulate_votes, votes_needed


def test_seeded_and_shaped():
    pops = [
        Population(10, per_item=3, spammer_share=0.3),
        Population(2, "llm", per_item=2, confident=True),
    ]
    a = simulate_votes(200, 3, pops, seed=7)
    b = simulate_votes(200, 3, pops, seed=7)
    assert np.array_equal(a.votes.label, b.votes.label)
    assert len(a.votes) == 200 * 5 and a.votes.n_voters == 12
    assert np.isnan(a.votes.conf[a.votes.voter < 10]).all()
    assert not np.isnan(a.votes.conf[a.votes.voter >= 10]).any()
    spam = np.array(
        [np.allclose(c.max(axis=1), 1.0) and np.ptp(c.argmax(1)) == 0 for c in a.confusion[:10]]
    )
    assert spam.any()


def test_drift_lowers_late_accuracy():
    sim = simulate_votes(4000, 2, [Population(10, per_item=3, accuracy=(50, 1), drift=0.9)], seed=1)
    correct = sim.votes.label == sim.truth[sim.votes.item]
    early, late = correct[sim.votes.item < 1000].mean(), correct[sim.votes.item >= 3000].mean()
    assert early > late + 0.2


def test_policy_replay_saves_votes_and_keeps_accuracy():
    sim = simulate_votes(
        2000,
        2,
        [
            Population(20, per_item=5, accuracy=(8, 2)),
            Population(3, "llm", per_item=3, accuracy=(9, 1)),
        ],
        seed=2,
    )
    gold = Gold(np.arange(500), sim.truth[:500])
    model = DawidSkene().fit(sim.votes, gold, sim.kinds)
    report = calibrate(DawidSkene(), sim.votes, gold, kinds=sim.kinds)
    all_votes = (model.posteriors_[500:].argmax(1) == sim.truth[500:]).mean()
    items = np.arange(500, 2000)
    policy = Policy(target=0.95, min_human_votes=1, max_votes=8)
    r = simulate_policy(
        model, sim.votes, sim.kinds, sim.truth, policy, items=items, calibrate=report.transform
    )
    assert r.mean_votes < 0.6 * r.mean_votes_available
    assert r.accuracy > all_votes - 0.02
    assert r.share_final + r.share_escalated == 1.0


def test_policy_replay_passes_vote_counts_to_a_vote_count_repair():
    # Each voter's vote is copied by two shadow voters: evidence grows slower than the count
    # of votes, which only a repair that reads the vote count can express.
    base = simulate_votes(2500, 2, [Population(30, per_item=4, accuracy=(6, 2))], seed=7)
    v = base.votes
    votes = with_shadow_copies(v, v, 30)
    kinds = VoterKinds.uniform(90)
    gold = Gold(np.arange(800), base.truth[:800])
    model = DawidSkene().fit(votes, gold, kinds)
    aware = calibrate(DawidSkene(), votes, gold, kinds=kinds, by_votes=True)
    assert aware.method in VOTE_COUNT_METHODS and aware.needs_votes
    items = np.arange(800, 2500)
    policy = Policy(target=0.9, min_human_votes=1, max_votes=100)
    # The repair alone (``calibrator``): the stopping rule on top has tests of its own.
    r = simulate_policy(
        model, votes, kinds, base.truth, policy, items=items, calibrate=aware.calibrator.transform
    )
    all_votes = (model.posteriors_[items].argmax(1) == base.truth[items]).mean()
    assert r.accuracy > all_votes - 0.03
    assert r.mean_votes < r.mean_votes_available
    # Posteriors where the policy stopped say about what they mean.
    assert r.ece < 0.05


def fewest_votes_by_brute_force(model: DawidSkene, votes, items, target: float) -> np.ndarray:
    loglik, log_prior = model.vote_log_likelihood(votes), np.log(model.class_prior_)
    out = []
    for i in items:
        rows = np.flatnonzero(votes.item == i)
        reach = (
            m
            for m in range(1, len(rows) + 1)
            for subset in itertools.combinations(rows, m)
            if softmax_rows((log_prior + loglik[list(subset)].sum(0))[None]).max() >= target
        )
        out.append(next(reach, len(rows) + 1))
    return np.array(out)


def test_votes_needed_is_exact_for_two_classes_and_a_lower_bound_for_more():
    for k in (2, 3):
        sim = simulate_votes(60, k, [Population(8, per_item=5, accuracy=(6, 2))], seed=k)
        model = DawidSkene().fit(sim.votes)
        items = np.arange(60)
        bound = votes_needed(model, sim.votes, items, 0.95)
        brute = fewest_votes_by_brute_force(model, sim.votes, items, 0.95)
        assert (bound == brute).all() if k == 2 else (bound <= brute).all()
        assert {1, 2} <= set(bound.tolist())  # some items reach 0.95 on one vote, some need more


def test_votes_needed_bounds_the_policy_and_grows_under_a_cautious_calibration():
    sim = simulate_votes(800, 2, [Population(12, per_item=7, accuracy=(5, 2))], seed=3)
    model = DawidSkene().fit(sim.votes)
    items = np.arange(800)
    policy = Policy(target=0.95, min_human_votes=1, max_votes=100)

    def soften(p: np.ndarray, n: np.ndarray) -> np.ndarray:
        return softmax_rows(np.log(p) / 2.0)

    for cal in (None, soften):
        bound = votes_needed(model, sim.votes, items, 0.95, calibrate=cal)
        replay = simulate_policy(model, sim.votes, sim.kinds, sim.truth, policy, calibrate=cal)
        spent = np.minimum(bound, 7)  # an item that can never reach the target spends all 7
        assert (replay.votes_used >= spent).all()
        assert (replay.confidence[bound == 8] < 0.95).all()
    cautious = votes_needed(model, sim.votes, items, 0.95, calibrate=soften)
    assert (cautious >= votes_needed(model, sim.votes, items, 0.95)).all()
    assert (cautious == 8).sum() > 0
