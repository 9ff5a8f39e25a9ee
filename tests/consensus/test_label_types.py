import numpy as np
import pytest

from llmlabel.consensus import ConsensusInputError, Gold
from llmlabel.consensus.multilabel import MultiLabelConsensus, MultiLabelGold, MultiLabelVotes
from llmlabel.consensus.options import OptionItems, OptionsConsensus, OptionVotes
from llmlabel.consensus.taxonomy import Taxonomy, TaxonomyConsensus, TaxonomyVotes
from llmlabel.simulate import OptionVoterGroup, simulate_options

TAX = Taxonomy(
    [("animal", "cat"), ("animal", "dog"), ("plant", "tree"), ("plant", "rose"), ("plant", "moss")]
)


def test_multilabel_is_one_binary_model_per_label():
    rng = np.random.default_rng(0)
    truth = rng.random((600, 3)) < 0.3
    item = np.repeat(np.arange(600), 5)
    voter = np.tile(np.arange(5), 600)
    flip = rng.random((3000, 3)) < np.array([0.05, 0.1, 0.3])[None, :]  # label 2 is hard
    chosen = truth[item] ^ flip
    votes = MultiLabelVotes(item, voter, chosen, 600, 5)
    gold = MultiLabelGold(np.arange(100), truth[:100])
    model = MultiLabelConsensus().fit(votes, gold)
    post = model.posteriors_
    assert post.shape == (600, 3)
    assert np.array_equal(post[:100] > 0.5, truth[:100])
    acc = ((post[100:] > 0.5) == truth[100:]).mean(axis=0)
    assert np.all(acc > [0.99, 0.98, 0.8])
    np.testing.assert_allclose(model.predict_proba(votes)[100:], post[100:], atol=1e-6)


def test_taxonomy_codes_and_marginals_by_hand():
    assert TAX.code(("plant",)) == (0, 1)
    assert TAX.code(("plant", "rose")) == (1, 3)  # leaves sorted: cat, dog, moss, rose, tree
    with pytest.raises(ConsensusInputError, match="'plant/cactus' is not a node"):
        TAX.code(("plant", "cactus"))
    post = np.array([[0.5, 0.48, 0.01, 0.005, 0.005]])
    marg = TAX.marginals(post)
    np.testing.assert_allclose(marg[0], [[0.98, 0.02]])
    level, node, prob = TAX.deepest(post, 0.97)
    assert (level[0], node[0]) == (0, 0) and abs(prob[0] - 0.98) < 1e-12


def test_coarse_votes_settle_the_coarse_level_only():
    # Ten voters say "animal" for item 0 and nothing finer: animal is certain, cat/dog is not.
    votes = TaxonomyVotes(
        np.zeros(10, dtype=np.int64),
        np.arange(10),
        np.zeros(10, dtype=np.int64),
        np.zeros(10, dtype=np.int64),
        1,
        10,
    )
    post = TaxonomyConsensus(TAX).fit(votes).posteriors_
    assert abs(post[0, 0] - post[0, 1]) < 1e-9  # symmetric within the subtree
    level, node, _ = TAX.deepest(post, 0.97)
    assert (level[0], node[0]) == (0, 0)


def test_taxonomy_mixed_depth_votes_recover_leaves():
    rng = np.random.default_rng(1)
    n, n_voters = 1500, 15
    truth = rng.integers(0, 5, n)
    item = np.repeat(np.arange(n), 4)
    voter = np.concatenate([rng.choice(n_voters, 4, replace=False) for _ in range(n)])
    level = (rng.random(item.shape[0]) < 0.6).astype(np.int64)
    true_node = np.where(level == 1, truth[item], TAX.ancestor[0][truth[item]])
    size = np.where(level == 1, 5, 2)
    wrong = rng.random(item.shape[0]) > 0.85
    node = np.where(wrong, (true_node + rng.integers(1, 5, item.shape[0])) % size, true_node)
    votes = TaxonomyVotes(item, voter, level, node, n, n_voters)
    gold = Gold(np.arange(200), truth[:200])
    model = TaxonomyConsensus(TAX).fit(votes, gold)
    assert (model.posteriors_[200:].argmax(1) == truth[200:]).mean() > 0.85
    coarse = TAX.marginals(model.posteriors_)[0].argmax(1)
    assert (coarse[200:] == TAX.ancestor[0][truth[200:]]).mean() > 0.95
    np.testing.assert_allclose(model.predict_proba(votes)[200:], model.posteriors_[200:], atol=1e-6)


def test_options_learn_position_and_length_bias():
    sim = simulate_options(
        1200,
        [
            OptionVoterGroup(12, per_item=3, skill=2.5),
            OptionVoterGroup(6, per_item=2, skill=0.5, length_bias=2.0),
            OptionVoterGroup(4, "llm", per_item=1, skill=1.5, first_bias=1.5),
        ],
        seed=0,
    )
    model = OptionsConsensus().fit(sim.items, sim.votes, kinds=sim.kinds)
    theta = model.params_
    assert theta[12:18, 2].mean() > 1.2 and abs(theta[:12, 2].mean()) < 0.5
    assert theta[18:, 1].mean() > 0.8 and abs(theta[:12, 1].mean()) < 0.5
    acc = (model.posteriors_.argmax(1) == sim.truth).mean()
    counts = np.zeros(model.posteriors_.shape)
    np.add.at(counts, (sim.votes.item, sim.votes.choice), 1.0)
    counts += np.random.default_rng(0).random(counts.shape) * 1e-3  # random tie-break
    majority = (np.where(sim.items.valid, counts, -1).argmax(1) == sim.truth).mean()
    assert acc > majority + 0.05
    np.testing.assert_allclose(model.posteriors_.sum(1), 1.0)


def test_options_validate_input():
    with pytest.raises(ConsensusInputError, match="≥ 2 options"):
        OptionItems(np.array([[10.0, np.nan]]))
    items = OptionItems(np.array([[10.0, 20.0, np.nan]]))
    bad = OptionVotes(np.array([0]), np.array([0]), np.array([2]), 1, 1)
    with pytest.raises(ConsensusInputError, match="does not have"):
        OptionsConsensus().fit(items, bad)
