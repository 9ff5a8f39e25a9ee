import numpy as np
from tests.consensus.shadows import with_shadow_copies

from llmlabel.consensus import DawidSkene, Gold, Policy, VoterKinds, calibrate
from llmlabel.consensus.calibration import VOTE_COUNT_METHODS
from llmlabel.simulate import Population, simulate_policy, simulate_votes


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
    r = simulate_policy(
        model, votes, kinds, base.truth, policy, items=items, calibrate=aware.transform
    )
    all_votes = (model.posteriors_[items].argmax(1) == base.truth[items]).mean()
    assert r.accuracy > all_votes - 0.03
    assert r.mean_votes < r.mean_votes_available
    # Finalized posteriors say what they mean at the point the policy stopped.
    assert r.ece < 0.05
