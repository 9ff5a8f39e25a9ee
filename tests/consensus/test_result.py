import numpy as np

from llmlabel.consensus import Decision, Gold, Policy, run_consensus
from llmlabel.simulate import Population, simulate_votes


def test_run_consensus_end_to_end():
    sim = simulate_votes(
        1500,
        3,
        [
            Population(15, per_item=2, accuracy=(9, 2)),
            Population(2, "llm", per_item=2, accuracy=(6, 3), confident=True),
        ],
        seed=11,
    )
    gold = Gold(np.arange(300), sim.truth[:300])
    result = run_consensus(sim.votes, gold, sim.kinds, Policy(target=0.9))
    n = sim.votes.n_items
    assert result.posteriors.shape == (n, 3)
    np.testing.assert_allclose(result.posteriors.sum(1), 1.0)
    assert np.all(result.posteriors[gold.item, gold.label] == 1.0)
    assert result.confusion.shape == (17, 5, 3, 3)
    assert result.calibration is not None
    assert result.calibration.ece_after <= result.calibration.ece_before + 0.01
    d = result.decisions
    assert set(np.unique(d.code)) <= {Decision.FINAL, Decision.MORE, Decision.ESCALATE}
    final = d.code == Decision.FINAL
    assert final.mean() > 0.5
    assert (d.label[final][300:] == sim.truth[final][300:]).mean() > 0.9
    assert np.all(d.decided_by[final] == "consensus")
