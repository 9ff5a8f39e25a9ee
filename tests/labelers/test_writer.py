"""The run's one database writer: ledger rows, votes and awaited ops in shared transactions; a
failed write nobody awaited is raised, not lost; nothing waits forever on a stopped writer."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from sqlalchemy import Text, cast, func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from tests.labelers.conftest import Env, Setup, labeler, project_dict

from llmlabel.labelers.ledger import CallRow, Writer
from llmlabel.projects import get_or_create_voter
from llmlabel.store import leases
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Item, Lease, LLMCall, Vote
from llmlabel.votes import NewVote, VoteInput


def _row(env: Env, h: str, response: dict[str, Any] | None = None) -> CallRow:
    assert env.project.id is not None
    return CallRow(project_id=env.project.id, labeler="gpt", model="openai/fake", prompt_version="v",
                   request_hash=h, run_id="run", outcome="ok", response=response or {"choices": []})


def _claimed(env: Env, n: int) -> tuple[int, list[leases.Claim]]:
    with session_scope(env.engine) as s:
        voter = get_or_create_voter(s, project_id=env.project.id, name="gpt", kind="llm").id  # type: ignore[arg-type]
        assert voter is not None
        return voter, leases.claim(s, project_id=env.project.id, voter_id=voter, human=False,  # type: ignore[arg-type]
                                   limit=n, lease_seconds=60)


def _count(env: Env, table: type) -> int:
    with Session(env.engine) as s:
        return int(s.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_calls_done_runs_once_its_row_is_committed(setup: Setup) -> None:
    env = setup(project_dict(labeler()), ["a"])

    async def main() -> list[int]:
        writer = Writer(env.engine)
        seen: list[int] = []
        done = asyncio.Event()

        def committed() -> None:  # on the loop, after the commit: the row is there to read
            seen.append(_count(env, LLMCall))
            done.set()

        writer.record_call(_row(env, "h1"), done=committed)
        await asyncio.wait_for(done.wait(), 10)
        await asyncio.to_thread(writer.close)
        return seen

    assert asyncio.run(main()) == [1]


def test_a_response_handed_over_as_json_text_reads_back_as_the_object_it_was(setup: Setup) -> None:
    env = setup(project_dict(labeler()), ["a"])
    response = {"choices": [{"content": '{"label": "n\u00e9gatif"}', "logprobs": [{"token": "{", "logprob": -0.5}]}],
                "prompt_tokens": 3}

    async def main() -> None:
        writer = Writer(env.engine)
        writer.record_call(_row(env, "h1", response))
        writer.record_call(CallRow(project_id=env.project.id, labeler="gpt", model="openai/fake",  # type: ignore[arg-type]
                                   prompt_version="v", request_hash="h2", run_id="run", outcome="error", error="500"))
        await asyncio.to_thread(writer.close)

    asyncio.run(main())
    with session_scope(env.engine) as s:  # a row written by SQLAlchemy itself, to compare with
        s.add(LLMCall(project_id=env.project.id, labeler="gpt", model="m", prompt_version="v",  # type: ignore[arg-type]
                      request_hash="orm", outcome="ok", response=response))
    with Session(env.engine) as s:
        rows = s.execute(select(LLMCall.request_hash, LLMCall.response, cast(LLMCall.created_at, Text))).all()  # type: ignore[call-overload]
    assert {h: r for h, r, _ in rows} == {"h1": response, "h2": None, "orm": response}  # objects, not strings of them; none is NULL
    stamps = {re.sub(r"\d", "0", re.sub(r"\.\d+", ".", t)) for _, _, t in rows}  # (PostgreSQL drops trailing zeros)
    assert len(stamps) == 1, stamps  # the times stored as SQLAlchemy stores them


def test_a_ledger_row_that_breaks_a_constraint_fails_alone_and_is_raised(setup: Setup) -> None:
    env = setup(project_dict(labeler()), ["a"])
    bad = CallRow(project_id=10**6, labeler="gpt", model="openai/fake", prompt_version="v",  # no such project
                  request_hash="bad", run_id="run", outcome="ok")

    async def main() -> None:
        writer = Writer(env.engine)
        writer.record_call(_row(env, "good"))
        writer.record_call(bad)
        with pytest.raises(IntegrityError, match=r"(?i)foreign key"):
            await asyncio.wait_for(writer.flush(), 10)
        with pytest.raises(IntegrityError):
            await asyncio.to_thread(writer.close)

    asyncio.run(main())
    with Session(env.engine) as s:
        assert list(s.execute(select(LLMCall.request_hash)).scalars()) == ["good"]  # type: ignore[call-overload]


def test_votes_wait_for_each_other_and_other_ops_but_flush_writes_them_with_their_leases(setup: Setup) -> None:
    env = setup(project_dict(labeler()), ["a", "b", "c"])
    voter, claims = _claimed(env, 3)
    pid = env.project.id
    assert pid is not None

    async def main() -> tuple[int, int, int]:
        writer = Writer(env.engine, vote_delay=30.0)  # votes would wait half a minute for others
        for c in claims:
            writer.record_vote(project_id=pid, vote=NewVote(c.item_id, voter, VoteInput(label="positive")),
                               lease_id=c.lease_id)
        await asyncio.sleep(0.2)
        waiting = _count(env, Vote)
        # an op such as a claim goes through without them: their leases keep their items
        seen_by_op = await asyncio.wait_for(writer.submit(lambda s: s.execute(select(func.count()).select_from(Vote)).scalar_one()), 10)
        await asyncio.wait_for(writer.flush(), 10)  # …but not behind a flush
        await asyncio.to_thread(writer.close)
        return waiting, seen_by_op, _count(env, Vote)

    assert asyncio.run(main()) == (0, 0, 3)
    with Session(env.engine) as s:
        assert set(s.execute(select(Lease.state)).scalars()) == {"done"}
        assert set(s.execute(select(Item.vote_count)).scalars()) == {1}


def test_a_failed_write_nobody_awaited_is_raised_and_the_rest_of_its_batch_committed(setup: Setup) -> None:
    env = setup(project_dict(labeler()), ["a", "b"])
    voter, claims = _claimed(env, 2)
    pid = env.project.id
    assert pid is not None

    async def main() -> None:
        writer = Writer(env.engine)
        good, bad = claims
        writer.record_vote(project_id=pid, vote=NewVote(good.item_id, voter, VoteInput(label="positive")),
                           lease_id=good.lease_id)
        writer.record_vote(project_id=pid, vote=NewVote(bad.item_id, voter + 1000, VoteInput(label="positive")),
                           lease_id=bad.lease_id)  # no such voter: the foreign key refuses it
        writer.record_call(_row(env, "h2"))
        with pytest.raises(Exception, match=r"(?i)foreign key"):
            await asyncio.wait_for(writer.flush(), 10)
        with pytest.raises(Exception, match=r"(?i)foreign key"):
            writer.check()  # and again before any new call
        with pytest.raises(Exception, match=r"(?i)foreign key"):
            await asyncio.to_thread(writer.close)

    asyncio.run(main())
    assert _count(env, Vote) == 1 and _count(env, LLMCall) == 1


def test_a_stopped_writer_fails_what_is_asked_of_it_at_once(setup: Setup) -> None:
    env = setup(project_dict(labeler()), ["a"])

    async def main() -> None:
        writer = Writer(env.engine)
        await asyncio.to_thread(writer.close)
        with pytest.raises(RuntimeError, match="stopped"):
            await asyncio.wait_for(writer.submit(lambda s: 1), 5)  # an error, not a wait forever

    asyncio.run(main())
