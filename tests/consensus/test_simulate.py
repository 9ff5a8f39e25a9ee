import numpy as np

from llmlabel.consensus import DawidSkene, Gold, Policy, calibrate
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
