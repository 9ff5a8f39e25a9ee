import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlabel.consensus import DawidSkene, Gold, Votes


@st.composite
def vote_tables(draw: st.DrawFn) -> tuple[Votes, Gold]:
    n_items = draw(st.integers(2, 12))
    n_voters = draw(st.integers(1, 6))
    k = draw(st.integers(2, 4))
    n = draw(st.integers(1, 50))
    item = draw(st.lists(st.integers(0, n_items - 1), min_size=n, max_size=n))
    voter = draw(st.lists(st.integers(0, n_voters - 1), min_size=n, max_size=n))
    label = draw(st.lists(st.integers(-1, k - 1), min_size=n, max_size=n))
    conf = draw(st.lists(st.one_of(st.just(float("nan")), st.floats(0, 1)), min_size=n, max_size=n))
    votes = Votes(
        np.array(item), np.array(voter), np.array(label), n_items, n_voters, k, np.array(conf)
    )
    gold_items = draw(st.sets(st.integers(0, n_items - 1), max_size=n_items))
    gitems = np.array(sorted(gold_items), dtype=np.int64)
    glabels = np.array([draw(st.integers(0, k - 1)) for _ in gitems], dtype=np.int64)
    return votes, Gold(gitems, glabels)


@settings(max_examples=60, deadline=None)
@given(vote_tables())
def test_posteriors_are_distributions(data: tuple[Votes, Gold]) -> None:
    votes, gold = data
    post = DawidSkene().fit(votes, gold).posteriors_
    assert np.all(post >= 0)
    np.testing.assert_allclose(post.sum(axis=1), 1.0)


@settings(max_examples=60, deadline=None)
@given(vote_tables())
def test_gold_items_come_back_as_gold(data: tuple[Votes, Gold]) -> None:
    votes, gold = data
    model = DawidSkene().fit(votes, gold)
    post = model.predict_proba(votes, gold)
    assert np.all(post[gold.item, gold.label] == 1.0)
    assert np.all(model.posteriors_[gold.item, gold.label] == 1.0)


@settings(max_examples=60, deadline=None)
@given(vote_tables(), st.randoms(use_true_random=False))
def test_permuting_voter_ids_changes_nothing(data: tuple[Votes, Gold], rnd) -> None:
    votes, gold = data
    perm = np.arange(votes.n_voters)
    rnd.shuffle(perm)
    shuffled = Votes(
        votes.item,
        perm[votes.voter],
        votes.label,
        votes.n_items,
        votes.n_voters,
        votes.n_classes,
        votes.conf,
    )
    a = DawidSkene().fit(votes, gold).posteriors_
    b = DawidSkene().fit(shuffled, gold).posteriors_
    np.testing.assert_allclose(a, b, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    n_items=st.integers(3, 30),
    k=st.integers(2, 5),
    n_voters=st.integers(3, 6),
    winner=st.integers(0, 4),
)
def test_unanimous_confident_votes_win(n_items: int, k: int, n_voters: int, winner: int) -> None:
    winner %= k
    rng = np.random.default_rng(n_items * 7 + k)
    truth = rng.integers(0, k, n_items)
    truth[0] = winner
    item = np.repeat(np.arange(n_items), n_voters)
    voter = np.tile(np.arange(n_voters), n_items)
    label = truth[item]
    votes = Votes(item, voter, label, n_items, n_voters, k, np.full(item.shape[0], 0.99))
    post = DawidSkene().fit(votes).posteriors_
    assert post[0].argmax() == winner
    assert post[0, winner] > 0.95
