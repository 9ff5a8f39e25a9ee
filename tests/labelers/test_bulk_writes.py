"""The bulk write paths a labeling run uses, on SQLite and PostgreSQL: votes recorded a batch at a
time keep one vote per (item, voter) and an exact ``vote_count``; LLM leases claimed a batch at
a time; answers served from the ledger give the very votes the live run gave; costs from
litellm's price table."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update
from sqlmodel import Session, col
from tests.labelers.conftest import Env, Setup, labeler, project_dict

from llmlabel.labelers.completion import _litellm
from llmlabel.projects import get_or_create_voter
from llmlabel.store import leases
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Item, Lease, LLMCall, Vote
from llmlabel.testing import answer
from llmlabel.votes import NewVote, VoteInput, record_vote, record_votes

OK = answer({"label": "positive", "rationale": "glowing"}, probs={"positive": 0.6, "negative": 0.3, "neutral": 0.1})


def _items(env: Env) -> list[int]:
    with Session(env.engine) as s:
        return [int(i) for i in s.execute(select(Item.id).order_by(Item.id)).scalars()]  # type: ignore[arg-type]


def _voters(env: Env, *names: str) -> list[int]:
    with session_scope(env.engine) as s:
        return [int(get_or_create_voter(s, project_id=env.project.id, name=n, kind="llm").id) for n in names]  # type: ignore[arg-type]


def test_record_votes_keeps_one_vote_per_item_and_voter_and_counts_exactly(setup: Setup) -> None:
    env = setup(project_dict(labeler()), ["a", "b", "c"])
    i1, i2, i3 = _items(env)
    a, b = _voters(env, "a", "b")
    pid = env.project.id
    assert pid is not None
    with session_scope(env.engine) as s:
        first, created = record_vote(s, project_id=pid, item_id=i1, voter_id=a, vote=VoteInput(label="positive"))
        assert created and first.label == "positive"
    with session_scope(env.engine) as s:
        new = record_votes(s, project_id=pid, votes=[
            NewVote(i1, a, VoteInput(label="negative")),  # a replay: the first vote stays
            NewVote(i1, b, VoteInput(label="neutral")),
            NewVote(i2, a, VoteInput(label=None, abstain_reason="refused")),
            NewVote(i2, b, VoteInput(label="positive")),
            NewVote(i2, b, VoteInput(label="negative")),  # twice in one batch: the first one counts
        ])
    assert set(new) == {(i1, b), (i2, a), (i2, b)}
    with session_scope(env.engine) as s:
        again, created = record_vote(s, project_id=pid, item_id=i1, voter_id=a, vote=VoteInput(label="neutral"))
        assert not created and again.id == first.id and again.label == "positive"
        assert record_votes(s, project_id=pid, votes=[]) == {}
    by_pair = {(v.item_id, v.voter_id): v for v in env.votes()}
    assert {k: v.label for k, v in by_pair.items()} == {
        (i1, a): "positive", (i1, b): "neutral", (i2, a): None, (i2, b): "positive"}
    assert by_pair[(i2, a)].abstain_reason == "refused" and new[(i2, a)] == by_pair[(i2, a)].id
    with Session(env.engine) as s:
        counts = dict(s.execute(select(Item.id, Item.vote_count)).all())  # type: ignore[call-overload]
    assert counts == {i1: 2, i2: 2, i3: 0}


def test_objects_the_caller_holds_see_the_writes(setup: Setup) -> None:
    """As an ORM update would: the caller's Item shows its new count, its Lease is done."""
    env = setup(project_dict(labeler()), ["a"])
    [item_id] = _items(env)
    [voter] = _voters(env, "annotator")
    with session_scope(env.engine) as s:
        [claim] = leases.claim(s, project_id=env.project.id, voter_id=voter, human=True, limit=1,  # type: ignore[arg-type]
                               lease_seconds=60)
    with session_scope(env.engine) as s:
        item = s.get(Item, item_id)
        lease = s.get(Lease, claim.lease_id)
        assert item is not None and lease is not None and lease.state == "active"
        record_vote(s, project_id=env.project.id, item_id=item_id, voter_id=voter, vote=VoteInput(label="positive"))  # type: ignore[arg-type]
        leases.finish(s, lease_ids=[claim.lease_id])
        assert item.vote_count == 1 and lease.state == "done"
    with Session(env.engine) as s:
        stored = s.get(Lease, claim.lease_id)
        assert stored is not None and stored.state == "done"


def test_llm_claims_come_in_one_batch_and_take_back_their_own_lapsed_leases(setup: Setup) -> None:
    env = setup(project_dict(labeler()), [f"t{i}" for i in range(5)])
    ids = _items(env)
    [voter] = _voters(env, "gpt")
    pid = env.project.id
    with session_scope(env.engine) as s:
        first = leases.claim(s, project_id=pid, voter_id=voter, human=False, limit=3, lease_seconds=0)  # type: ignore[arg-type]
    assert [c.item_id for c in first] == ids[:3] and len({c.lease_id for c in first}) == 3
    with session_scope(env.engine) as s:  # the three lapsed at once: they come back, same rows
        again = leases.claim(s, project_id=pid, voter_id=voter, human=False, limit=10, lease_seconds=60)  # type: ignore[arg-type]
    assert [c.item_id for c in again] == ids
    assert [c.lease_id for c in again[:3]] == [c.lease_id for c in first]
    assert all(a.token != b.token for a, b in zip(again, first, strict=False))
    with Session(env.engine) as s:
        rows = {r.id: r for r in s.execute(select(Lease)).scalars()}
    assert len(rows) == 5
    for c in again:
        row = rows[c.lease_id]
        assert (row.item_id, row.voter_id, row.token, row.state, row.is_human) == (c.item_id, voter, c.token, "active", False)


def _set(env: Env, item_id: int, **values: object) -> None:
    with session_scope(env.engine) as s:
        s.execute(update(Item).where(col(Item.id) == item_id).values(**values))


def test_an_llm_claim_walks_on_from_its_cursor_in_queue_order(setup: Setup) -> None:
    env = setup(project_dict(labeler()), [f"t{i}" for i in range(6)], gold={5: "positive"})
    ids = _items(env)
    for i, priority in zip(ids, [2.0, 1.0, 1.0, 1.0, 0.0, 0.0], strict=True):
        _set(env, i, priority=priority)
    _set(env, ids[5], status="final")  # decided gold: machines still answer it
    [voter] = _voters(env, "gpt")

    def claim(after: tuple[float, int] | None, limit: int) -> list[int]:
        with session_scope(env.engine) as s:
            got = leases.claim(s, project_id=env.project.id, voter_id=voter, human=False,  # type: ignore[arg-type]
                               limit=limit, lease_seconds=60, after=after)
        return [c.item_id for c in got]

    assert claim((1.0, ids[1]), 3) == [ids[2], ids[3], ids[4]]  # the rest of its priority, then lower ones
    assert claim((2.0, ids[0]), 10) == [ids[1]]  # open items only: the decided gold item is not in the ranges
    assert claim(None, 10) == [ids[0], ids[5]]  # from the top: every item, whatever its status


def test_a_run_labels_what_its_cursor_walked_past(setup: Setup, fake_llm) -> None:
    """The first claim takes 64 items; the decided gold item after them is not open, so the
    walk on from the cursor never sees it: only the last walk from the top does."""
    srv = fake_llm(OK)
    env = setup(project_dict(labeler(base_url=srv.base_url, concurrency=2)), [f"t{i}" for i in range(70)],
                gold={69: "positive"})
    ids = _items(env)
    _set(env, ids[69], status="final")
    report = env.run()
    assert report.votes == 70 and srv.request_count == 70
    with Session(env.engine) as s:
        voted = set(s.execute(select(Vote.item_id)).scalars())  # type: ignore[call-overload]
    assert voted == set(ids)


def test_answers_from_the_ledger_give_the_same_votes(setup: Setup, fake_llm) -> None:
    srv = fake_llm(OK)
    env = setup(project_dict(labeler(base_url=srv.base_url, concurrency=4), labeler("b", base_url=srv.base_url)),
                [f"text {i}" for i in range(40)])
    env.run()

    def seen() -> list[tuple[int, int, object, float | None, object, str | None]]:
        return [(v.item_id, v.voter_id, v.label, v.confidence, v.probs, v.rationale) for v in env.votes()]

    live = seen()
    env.forget_votes()  # the votes only: each item's vote_count stays at 2
    report = env.run()
    assert srv.request_count == 80 and sum(s.cache_hits for s in report.labelers) == 80
    assert seen() == live and len(live) == 80
    with Session(env.engine) as s:
        assert set(s.execute(select(Item.vote_count)).scalars()) == {4}  # two more each, no more
        assert len(list(s.execute(select(Vote.id)).scalars())) == 80
        assert {lease.state for lease in s.execute(select(Lease)).scalars()} == {"done"}


def test_cost_comes_from_litellms_price_table(setup: Setup, fake_llm) -> None:
    srv = fake_llm(OK)
    env = setup(project_dict({**labeler(base_url=srv.base_url), "model": "openai/gpt-4o-mini"}), ["text"])
    env.run()
    [call] = env.calls()
    pin, pout = _litellm().cost_per_token(model="gpt-4o-mini", prompt_tokens=call.prompt_tokens,
                                          completion_tokens=call.completion_tokens)
    assert call.prompt_tokens > 0 and call.cost_usd == pytest.approx(pin + pout) and call.cost_usd > 0
    [vote] = env.votes()
    assert vote.cost_usd == pytest.approx(call.cost_usd)
    with Session(env.engine) as s:
        assert s.execute(select(LLMCall.cost_usd)).scalar_one() == pytest.approx(call.cost_usd)
