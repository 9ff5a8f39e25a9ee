"""Annotator tasks through the API: what a task shows, how leases are handed out, and what
happens to an answer (idempotent replays, late and foreign submissions, time on task)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, text, update
from sqlmodel import col, select

from llmlabel.projects import get_or_create_voter
from llmlabel.store import leases
from llmlabel.store.db import refresh_statistics, session_scope
from llmlabel.store.tables import Item, Lease, Vote, utcnow
from llmlabel.votes import NewVote, VoteInput, record_votes

from .conftest import Api, force_gold, llm_vote, reviews

TASK_KEYS = {"lease_token", "item_id", "text", "fields", "choices", "instructions", "expires_at", "suggestions"}


def test_a_task_shows_the_item_and_instructions_only_and_gold_looks_the_same(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.project("p", gold_rate=0.5)
    rows = [{**r, "gold": "negative" if i < 3 else ""} for i, r in enumerate(reviews(6))]
    api.items("p", rows, gold_field="gold")
    for r in rows:
        llm_vote(api, "p", r["id"], "positive")
    assert api.client.post("/api/v1/projects/p/consensus", headers=api.admin).status_code == 200
    first, second = api.token("a1", "annotator", ["p"]), api.token("a2", "annotator", ["p"])
    force_gold(monkeypatch, False)
    seen = api.task("p", first)
    assert api.vote("p", first, seen["lease_token"], "neutral").status_code == 201

    force_gold(monkeypatch, True)
    gold_task = api.task("p", second)
    assert api.task("p", second) == gold_task  # asked again (a reload, a lost answer): the task held
    assert api.client.post(f"/api/v1/projects/p/tasks/{gold_task['lease_token']}/release", headers=second).status_code == 204
    force_gold(monkeypatch, False)
    plain_task = api.task("p", second)
    assert api.lease(gold_task["lease_token"]).is_gold
    assert not api.lease(plain_task["lease_token"]).is_gold
    assert set(gold_task) == set(plain_task) == TASK_KEYS
    assert {k: type(v) for k, v in gold_task.items()} == {k: type(v) for k, v in plain_task.items()}
    for task in (gold_task, plain_task):
        assert set(task["fields"]) == {"text"}  # the gold column is not a field
        assert task["suggestions"] == []  # no LLM votes: the project did not opt in
        assert task["instructions"] == "Pick the sentiment of the review."
        assert task["choices"] == ["positive", "negative", "neutral"]
        assert task["text"] == task["fields"]["text"]
    # an item someone already voted on shows nothing of that vote
    release = f"/api/v1/projects/p/tasks/{plain_task['lease_token']}/release"
    assert api.client.post(release, headers=second).status_code == 204
    third = api.token("a3", "annotator", ["p"])
    while (r := api.next("p", third)).status_code == 200 and r.json()["item_id"] != seen["item_id"]:
        api.client.post(f"/api/v1/projects/p/tasks/{r.json()['lease_token']}/release", headers=third)
    assert r.status_code == 200, api.db_item("p", seen["item_id"])
    again = r.json()
    assert set(again) == TASK_KEYS and again["suggestions"] == []  # a1's vote and the LLM's are not shown
    assert again["fields"] == {"text": api.db_item("p", seen["item_id"]).fields["text"]}


def test_suggestions_show_llm_votes_only_when_the_project_opts_in(api: Api) -> None:
    api.project("p", show_suggestions=True, min_human_votes=2)
    api.items("p", reviews(1))
    llm_vote(api, "p", "r0000", "negative", labeler="gpt")
    first, second = api.token("a1", "annotator", ["p"]), api.token("a2", "annotator", ["p"])
    t1 = api.task("p", first)
    assert t1["suggestions"] == [{"labeler": "gpt", "label": "negative", "confidence": 0.9}]
    assert api.vote("p", first, t1["lease_token"], "neutral").status_code == 201
    t2 = api.task("p", second)
    assert t2["item_id"] == "r0000"
    assert t2["suggestions"] == [{"labeler": "gpt", "label": "negative", "confidence": 0.9}]  # not a1's vote


def test_leases_cap_expire_and_never_repeat(api: Api) -> None:
    api.project("p", lease_seconds=5)
    api.items("p", reviews(1))
    a = [api.token(f"a{i}", "annotator", ["p"]) for i in range(5)]
    t0 = api.task("p", a[0])
    expires = datetime.fromisoformat(t0["expires_at"])
    assert timedelta(seconds=3) < expires - utcnow() <= timedelta(seconds=5)
    # one vote still needed, one annotator holds it: nobody else gets it
    assert api.db_item("p", "r0000").votes_needed == 1
    assert api.next("p", a[1]).status_code == 204
    # two needed: a second annotator may hold it too, not a third
    api.set_item("p", "r0000", votes_needed=2)
    t1 = api.task("p", a[1])
    assert t1["item_id"] == "r0000"
    assert api.next("p", a[2]).status_code == 204
    # a released task goes back to the pool, not to the one who released it
    assert api.client.post(f"/api/v1/projects/p/tasks/{t0['lease_token']}/release", headers=a[0]).status_code == 204
    assert api.client.post(f"/api/v1/projects/p/tasks/{t0['lease_token']}/release", headers=a[0]).status_code == 409
    assert api.next("p", a[0]).status_code == 204
    t2 = api.task("p", a[2])
    assert t2["item_id"] == "r0000"
    # an expired lease frees its place; its late answer is refused and stores nothing
    with session_scope(api.engine) as s:
        lease = s.exec(select(Lease).where(Lease.token == t1["lease_token"])).one()
        lease.expires_at = utcnow() - timedelta(seconds=1)
        s.add(lease)
    t3 = api.task("p", a[3])
    assert t3["item_id"] == "r0000"
    late = api.vote("p", a[1], t1["lease_token"])
    assert late.status_code == 409
    assert "expired" in late.json()["detail"] and "fetch a new task" in late.json()["detail"]
    assert api.next("p", a[1]).status_code == 204  # and it does not come back to a1
    assert api.vote_rows() == 0


def test_higher_priority_first_then_older(api: Api) -> None:
    api.project("p")
    api.items("p", reviews(4))
    for ext, priority in {"r0000": 0.0, "r0001": 0.5, "r0002": 0.5, "r0003": 0.9}.items():
        api.set_item("p", ext, priority=priority)
    a = api.token("a", "annotator", ["p"])
    order = []
    for _ in range(4):
        t = api.task("p", a)
        order.append(t["item_id"])
        assert api.client.post(f"/api/v1/projects/p/tasks/{t['lease_token']}/release", headers=a).status_code == 204
    assert order == ["r0003", "r0001", "r0002", "r0000"]


def test_idempotent_vote_replays_the_first_answer(api: Api) -> None:
    api.project("p")
    api.items("p", reviews(2))
    a = api.token("a", "annotator", ["p"])
    t = api.task("p", a)
    first = api.vote("p", a, t["lease_token"], "positive", key="k-1")
    assert first.status_code == 201 and first.json()["created"] is True
    again = api.vote("p", a, t["lease_token"], "positive", key="k-1")
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert api.vote_rows() == 1
    # the same key for a different answer is a client bug, named as such
    other = api.vote("p", a, t["lease_token"], "negative", key="k-1")
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    # without a key, answering twice is a conflict that points at the first vote
    twice = api.vote("p", a, t["lease_token"], "negative")
    assert twice.status_code == 409 and "already answered" in twice.json()["detail"]
    assert api.vote_rows() == 1
    with session_scope(api.engine) as s:
        assert s.exec(select(Vote.label)).all() == ["positive"]


def test_foreign_submission_is_404_and_stores_nothing(api: Api) -> None:
    api.project("p")
    api.items("p", reviews(2))
    a, b = api.token("a", "annotator", ["p"]), api.token("b", "annotator", ["p"])
    t = api.task("p", a)
    r = api.vote("p", b, t["lease_token"])
    assert r.status_code == 404 and "belongs to someone else" in r.json()["detail"]
    assert api.client.post(f"/api/v1/projects/p/tasks/{t['lease_token']}/release", headers=b).status_code == 404
    assert api.vote("p", b, "no-such-lease").status_code == 404
    assert api.vote_rows() == 0
    assert api.vote("p", a, t["lease_token"]).status_code == 201


def test_vote_records_time_on_task_unsure_comment_and_prediction(api: Api) -> None:
    api.project("p", min_human_votes=3)
    api.items("p", reviews(2))
    a = api.token("a", "annotator", ["p"])
    t = api.task("p", a)
    time.sleep(0.3)
    prediction = {"positive": 0.2, "negative": 0.5, "neutral": 0.3}
    r = api.vote("p", a, t["lease_token"], "negative", unsure=True, comment="sarcasm?", predicted_distribution=prediction)
    assert r.status_code == 201, r.text
    with session_scope(api.engine) as s:
        vote = s.exec(select(Vote)).one()
    assert 300 <= vote.latency_ms < 10_000
    assert vote.confidence_method == "human"
    assert (vote.unsure, vote.comment, vote.predicted_distribution) == (True, "sarcasm?", prediction)
    # the case view shows the flag and the comment to staff
    votes = api.item("p", t["item_id"])["votes"]
    assert votes[0]["unsure"] is True and votes[0]["comment"] == "sarcasm?"
    # a prediction that is not a distribution over the choices is refused, by name
    t2 = api.task("p", a)
    for bad in ({"positive": 0.5, "postive": 0.5}, {"positive": 0.9, "negative": 0.9}):
        r = api.vote("p", a, t2["lease_token"], "negative", predicted_distribution=bad)
        assert r.status_code == 422 and "predicted_distribution" in r.json()["detail"]
    assert api.vote_rows() == 1


def test_every_vote_moves_the_item_on(api: Api) -> None:
    api.project("p", min_human_votes=2, max_votes=3, target_confidence=0.9)
    api.items("p", reviews(1))
    a = [api.token(f"a{i}", "annotator", ["p"]) for i in range(5)]

    def answer(who: dict[str, str], item: str, label: str) -> dict[str, Any]:
        t = api.task("p", who)
        assert t["item_id"] == item, t
        assert api.vote("p", who, t["lease_token"], label).status_code == 201
        return api.item("p", item)

    one = answer(a[0], "r0000", "positive")
    assert one["status"] == "open" and one["posterior"]["positive"] > 0.5
    assert api.db_item("p", "r0000").votes_needed >= 1
    two = answer(a[1], "r0000", "positive")
    assert two["posterior"]["positive"] > one["posterior"]["positive"]
    assert (two["status"], two["label"], two["decided_by"]) == ("final", "positive", "consensus")
    # disagreement up to max_votes escalates
    api.items("p", reviews(1, start=1))
    states = [answer(a[i], "r0001", label)["status"] for i, label in ((2, "positive"), (3, "negative"), (4, "neutral"))]
    assert states == ["open", "open", "escalated"]
    item = api.db_item("p", "r0001")
    assert (item.conflict_kind, item.votes_needed) == ("human_vs_human", 0)


def test_items_stay_leased_to_humans_only_while_they_need_votes(api: Api) -> None:
    """A final item is not handed out again, however many annotators ask."""
    api.project("p", min_human_votes=1, target_confidence=0.75)
    api.items("p", reviews(1))
    a = [api.token(f"a{i}", "annotator", ["p"]) for i in range(3)]
    t = api.task("p", a[0])
    assert api.vote("p", a[0], t["lease_token"], "positive").status_code == 201
    # before the item is re-decided (the server does it in batches) nobody else gets it either
    assert [api.next("p", who).status_code for who in a[1:]] == [204, 204]
    assert api.item("p", "r0000")["status"] == "final"  # a read sees the decision the vote led to
    assert [api.next("p", who).status_code for who in a[1:]] == [204, 204]


def test_a_claim_reads_candidates_not_the_annotators_history(api: Api) -> None:
    """PostgreSQL: judging a window of candidates costs index probes per candidate, however
    long the annotator's history. The server's statistics upkeep analyzes the tables the bulk
    writes made stale (only llmlabel's); without it the never-analyzed tables were scanned once
    per candidate (26,000 vote rows), and as NOT EXISTS anti-joins the claim read all 400 of
    the annotator's leases even with fresh statistics."""
    if api.engine.dialect.name != "postgresql":
        pytest.skip("the plan in question is PostgreSQL's; SQLite probes per candidate by construction")
    history, open_items = 400, 200
    api.project("p")
    api.items("p", reviews(history + open_items))
    project_id = api.db_item("p", "r0000").project_id
    with session_scope(api.engine) as s:
        voter = get_or_create_voter(s, project_id=project_id, name="a", kind="human")
        s.flush()
        ids = list(s.exec(select(Item.id).where(Item.project_id == project_id).order_by(Item.id)))
        done = ids[:history]
        record_votes(s, project_id=voter.project_id, votes=[
            NewVote(i, voter.id, VoteInput(label="positive", confidence_method="human")) for i in done])  # type: ignore[arg-type]
        now = utcnow()
        s.execute(insert(Lease), [{"project_id": voter.project_id, "item_id": i, "voter_id": voter.id,
                                   "token": f"old{i}", "state": "done", "is_human": True, "is_gold": False,
                                   "created_at": now, "expires_at": now} for i in done])
        s.execute(update(Item).where(col(Item.id).in_(done)).values(status="final", votes_needed=0))
        s.execute(text("CREATE TABLE theirs AS SELECT generate_series(1, 500) AS n"))  # another application's
        s.execute(text("SELECT pg_stat_force_next_flush()"))  # these writes show in pg_stat_* at commit
    analyzed = set(refresh_statistics(api.engine))  # as the server's rounds do
    assert {"items", "votes", "leases"} <= analyzed and "theirs" not in analyzed
    assert refresh_statistics(api.engine) == []  # analyzed just now
    with session_scope(api.engine) as s:
        claims = leases.claim(s, project_id=voter.project_id, voter_id=voter.id, human=True,  # type: ignore[arg-type]
                              limit=1, lease_seconds=60)
        read = dict(s.execute(text(  # this transaction's reads so far, per table
            "SELECT relname, coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables "
            "WHERE relid IN ('votes'::regclass, 'leases'::regclass)")).all())  # this schema's tables
    assert [c.item_id for c in claims] == [ids[history]]
    assert read["votes"] < history / 2 and read["leases"] < history / 2, read


def test_a_claim_judges_the_items_others_hold_by_their_leases_alone(api: Api) -> None:
    """PostgreSQL: under load the head of the queue is what other annotators hold. A claim
    walks it in order, rejects each of those on its live leases without looking at the
    annotator's own votes and leases, and stops at the first free item: the votes table is
    probed for that item alone (once to pick, once to judge it again once locked). Measured
    on the code before: 65 (the whole window judged, then sorted); walking without the CASE,
    22 (PostgreSQL judged the votes before the leases)."""
    if api.engine.dialect.name != "postgresql":
        pytest.skip("counted in PostgreSQL's statistics; SQLite judges by the same statement")
    held = 20
    api.project("p", min_human_votes=1)
    api.items("p", reviews(leases.WINDOW + held))
    with session_scope(api.engine) as s:
        project_id = s.exec(select(Item.project_id)).first()
        others = [get_or_create_voter(s, project_id=project_id, name=f"other{i}", kind="human")  # type: ignore[arg-type]
                  for i in range(held)]
        me = get_or_create_voter(s, project_id=project_id, name="me", kind="human")  # type: ignore[arg-type]
        s.flush()
        for other in others:  # each takes the head of the queue, as annotators do
            leases.claim(s, project_id=project_id, voter_id=other.id, human=True, limit=1, lease_seconds=600)  # type: ignore[arg-type]
        first_free = s.exec(select(Item.id).where(Item.project_id == project_id).order_by(col(Item.id))).all()[held]
    # the backend's counts not yet flushed to the shared statistics: earlier transactions' too
    probes = text("SELECT coalesce(idx_scan, 0) + coalesce(seq_scan, 0) FROM pg_stat_xact_user_tables "
                  "WHERE relid = 'votes'::regclass")  # this schema's votes
    with session_scope(api.engine) as s:
        before = s.execute(probes).scalar()
        claims = leases.claim(s, project_id=project_id, voter_id=me.id, human=True, limit=1, lease_seconds=60)  # type: ignore[arg-type]
        during = s.execute(probes).scalar() - before
    assert [c.item_id for c in claims] == [first_free]
    assert during == 2, during


def test_a_claim_looks_past_a_first_window_that_has_nothing_for_the_annotator(api: Api) -> None:
    """The queue is judged a window at a time: with every item of the first window leased to
    someone else, the claim walks on to the next window instead of giving up."""
    api.project("p", min_human_votes=1)
    api.items("p", reviews(2 * leases.WINDOW + 3))
    with session_scope(api.engine) as s:
        project_id = s.exec(select(Item.project_id)).first()
        ids = list(s.exec(select(Item.id).where(Item.project_id == project_id).order_by(Item.id)))
        others = [get_or_create_voter(s, project_id=project_id, name=f"other{i}", kind="human")  # type: ignore[arg-type]
                  for i in range(2 * leases.WINDOW + 3)]
        s.flush()
        now = utcnow()

        def lease_to_others(items: list[int]) -> None:
            s.execute(insert(Lease), [{"project_id": project_id, "item_id": i, "voter_id": v.id, "token": f"t{i}",
                                       "state": "active", "is_human": True, "is_gold": False, "created_at": now,
                                       "expires_at": now + timedelta(hours=1)} for i, v in zip(items, others, strict=False)])

        lease_to_others(ids[:leases.WINDOW])  # the whole first window: each item wants one vote, and has its annotator
    a = api.token("a", "annotator", ["p"])
    got = api.task("p", a)["item_id"]
    assert got == f"r{leases.WINDOW:04d}", got  # the first item of the second window
    with session_scope(api.engine) as s:
        lease_to_others(ids[leases.WINDOW:])
    assert api.next("p", api.token("b", "annotator", ["p"])).status_code == 204  # the walk ends with the queue
