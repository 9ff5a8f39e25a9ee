import numpy as np
import pytest
from scipy.special import betaincinv

from llmlabel.consensus import DawidSkene, Gold, Policy, StoppingRule, calibrate
from llmlabel.consensus.stopping import first_crossings
from llmlabel.simulate import Population, simulate_policy, simulate_votes


def test_first_crossings_by_hand():
    # replay 0: 0.6 (wrong), 0.9, 0.8, 0.95 (right); replay 1: 0.7 (right), 0.65, 0.99 (wrong)
    conf = np.array([0.6, 0.9, 0.8, 0.95, 0.7, 0.65, 0.99])
    right = np.array([0, 1, 1, 1, 1, 1, 0], dtype=bool)
    path = np.array([0, 0, 0, 0, 1, 1, 1])
    thresholds, reached, ok = first_crossings(conf, right, path)
    # at 0.6 replay 0 stops on its wrong first vote and replay 1 on its right one; at 0.7 both
    # stop right; from 0.9 replay 1 stops on its wrong 0.99; at 0.99 only replay 1 gets there
    assert thresholds.tolist() == [0.6, 0.7, 0.9, 0.95, 0.99]
    assert reached.tolist() == [2, 2, 2, 2, 1]
    assert ok.tolist() == [1, 2, 1, 1, 0]


def test_first_crossings_match_a_replay_by_replay_count():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(1, 40))
        path = np.sort(rng.integers(0, 6, n))
        conf = np.round(rng.random(n), 2)  # ties across and within replays
        right = rng.random(n) < 0.7
        thresholds, reached, ok = first_crossings(conf, right, path)
        for t, r, k in zip(thresholds, reached, ok, strict=True):
            stops = [
                rows[0]
                for p in np.unique(path)
                if (rows := np.flatnonzero((path == p) & (conf >= t))).size
            ]
            assert (r, k) == (len(stops), right[stops].sum())
        assert set(thresholds) <= set(conf)


def two_class(conf: np.ndarray) -> np.ndarray:
    return np.column_stack([conf, 1.0 - conf])


def test_stopping_rule_is_a_monotone_lower_bound():
    # 400 one-vote replays, one per item, all saying class 0: at 0.9 right 180 times of 200,
    # at 0.99 right 195 times of 200
    probs = two_class(np.r_[np.full(200, 0.9), np.full(200, 0.99)])
    truth = np.r_[np.arange(200) >= 180, np.arange(200) >= 195].astype(np.int64)
    rule = StoppingRule().fit(probs, probs, truth, np.arange(400), n_items=400)
    low = betaincinv(180 + 195 + 0.5, 25 + 0.5, StoppingRule.level)  # at 0.9 both groups stop
    high = betaincinv(195 + 0.5, 5 + 0.5, StoppingRule.level)
    np.testing.assert_allclose(rule.y_, [low, high])
    assert rule.threshold(0.9) == pytest.approx(0.9)
    assert rule.threshold(high) == pytest.approx(0.99)
    assert rule.threshold(0.99) == float("inf")  # 195 of 200 cannot vouch for 99%
    new = np.array([[0.95, 0.03, 0.02], [0.005, 0.995, 0.0], [0.5, 0.3, 0.2]])
    out = rule.transform(new, new)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert out.argmax(axis=1).tolist() == [0, 1, 0]
    np.testing.assert_allclose(out.max(axis=1), [low, high, 0.5])  # below 0.9: kept, ≤ low


def test_the_model_confidence_splits_a_repaired_step():
    # An isotonic step maps raw 0.8 and raw 0.999 to one repaired 0.95; the raw 0.8 rows are
    # right 85% of the time and the raw 0.999 rows always. On the step alone no threshold
    # vouches for 95%; within it, the surer rows can finalize and the others cannot.
    repaired = two_class(np.full(600, 0.95))
    raw = two_class(np.r_[np.full(300, 0.8), np.full(300, 0.999)])
    truth = np.r_[np.arange(300) % 20 < 3, np.zeros(300, dtype=bool)].astype(np.int64)
    rule = StoppingRule().fit(repaired, raw, truth, np.arange(600), n_items=600)
    out = rule.transform(repaired[[0, 599]], raw[[0, 599]]).max(axis=1)
    assert out[0] < 0.95 <= out[1]
    assert rule.threshold(0.95) == pytest.approx(0.95)


def test_two_replays_of_one_item_weigh_as_one_item():
    probs = two_class(np.full(400, 0.9))
    truth = (np.arange(400) % 10 == 0).astype(np.int64)
    per_item = StoppingRule().fit(probs, probs, truth, np.arange(400), n_items=400)
    two_each = StoppingRule().fit(probs, probs, truth, np.arange(400), n_items=200)
    assert two_each.y_[0] < per_item.y_[0] < 0.9


def test_calibration_for_the_policy_carries_the_stopping_rule():
    sim = simulate_votes(1500, 2, [Population(20, per_item=6, accuracy=(6, 2))], seed=1)
    gold = Gold(np.arange(500), sim.truth[:500])
    final = calibrate(DawidSkene(), sim.votes, gold, prefixes=0)
    assert final.stopping is None  # all-vote posteriors are not read at a stopping point
    policy = calibrate(DawidSkene(), sim.votes, gold, by_votes=True)
    assert policy.stopping is not None
    post = DawidSkene().fit(sim.votes, gold).posteriors_
    n = np.bincount(sim.votes.item, minlength=1500)
    np.testing.assert_allclose(
        policy.transform(post, n),
        policy.stopping.transform(policy.calibrator.transform(post, n), post),
    )


@pytest.mark.parametrize("target", [0.9, 0.95])
def test_items_finalized_at_the_target_are_right_that_often(target: float):
    # Half the items are coin flips nobody can tell (difficulty ~1): there, early agreement is
    # luck, and a posterior that first crosses the target on a lucky run is wrong half the
    # time. The repair fitted on every prefix is calibrated on average but not at the first
    # crossing, so it finalizes below the target; the stopping rule finalizes at it.
    sim = simulate_votes(
        3000, 2, [Population(60, per_item=20, accuracy=(18, 2))], item_difficulty=(0.1, 0.1), seed=0
    )
    gold = Gold(np.arange(150), sim.truth[:150])
    model = DawidSkene().fit(sim.votes, gold, sim.kinds)
    report = calibrate(DawidSkene(), sim.votes, gold, kinds=sim.kinds, by_votes=True)
    items = np.arange(150, 3000)
    policy = Policy(target=target, min_human_votes=1, max_votes=1000)

    def replay(transform):
        r = simulate_policy(
            model, sim.votes, sim.kinds, sim.truth, policy, items=items, calibrate=transform
        )
        final = r.confidence >= target
        return r, final.sum(), (r.label[final] == sim.truth[items][final]).mean()

    _, _, kept_alone = replay(report.calibrator.transform)
    stopped, n_final, kept = replay(report.transform)
    assert kept_alone < target  # the failure being repaired
    assert kept >= target and n_final >= 500
    all_votes = (model.posteriors_[items].argmax(1) == sim.truth[items]).mean()
    assert stopped.accuracy > all_votes - 0.01
    assert stopped.mean_votes < stopped.mean_votes_available
