"""Adjudication through the API: the queue by conflict kind, the next case with every vote
(blind first when the project asks), and resolutions that become gold and refit reliability."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import select

from llmlabel import decisions
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Gold, utcnow

from .conftest import Api, Headers, human_vote, llm_vote, reviews

# item → votes (voter kind, name, label): two disagreeing LLMs, an LLM against a human, two humans
CONFLICTS: dict[str, list[tuple[str, str, str]]] = {
    "r0000": [("llm", "gpt", "positive"), ("llm", "claude", "negative")],
    "r0001": [("llm", "gpt", "positive"), ("human", "ann", "negative")],
    "r0002": [("human", "ann", "positive"), ("human", "bob", "neutral")],
}


def escalate(api: Api, **policy: Any) -> Headers:
    """Three escalated items, one per kind of conflict; returns a reviewer's headers."""
    api.project("p", max_votes=2, min_human_votes=0, **policy)
    api.items("p", reviews(4))
    for item, votes in CONFLICTS.items():
        for kind, name, label in votes:
            (llm_vote if kind == "llm" else human_vote)(api, "p", item, label, name)
    assert api.client.post("/api/v1/projects/p/consensus", headers=api.admin).status_code == 200
    return api.token("rev", "reviewer", ["p"])


def reliability(api: Api, item: str, voter: str) -> float:
    return next(v["reliability"] for v in api.item("p", item)["votes"] if v["voter"] == voter)


def test_queue_counts_and_next_case_by_kind(api: Api) -> None:
    rev = escalate(api)
    queue = api.client.get("/api/v1/projects/p/review/queue", headers=rev).json()
    assert queue == {"llm_vs_llm": 1, "llm_vs_human": 1, "human_vs_human": 1, "audit": 0, "none": 0}
    r = api.client.get("/api/v1/projects/p/review/next", params={"kind": "llm_vs_human"}, headers=rev)
    assert r.status_code == 200, r.text
    case = r.json()
    assert (case["item_id"], case["conflict_kind"], case["blind"]) == ("r0001", "llm_vs_human", False)
    assert case["text"] == "review number 1" and set(case["posterior"]) == {"positive", "negative", "neutral"}
    by_voter = {v["voter"]: v for v in case["votes"]}
    assert set(by_voter) == {"gpt", "ann"}
    assert (by_voter["gpt"]["kind"], by_voter["gpt"]["label"], by_voter["gpt"]["confidence"],
            by_voter["gpt"]["rationale"]) == ("llm", "positive", 0.9, "it says so")
    assert (by_voter["ann"]["kind"], by_voter["ann"]["label"]) == ("human", "negative")
    assert all(0 < v["reliability"] < 1 for v in case["votes"])
    assert api.client.get("/api/v1/projects/p/review/next", params={"kind": "none"}, headers=rev).status_code == 204
    bad = api.client.get("/api/v1/projects/p/review/next", params={"kind": "llm-vs-llm"}, headers=rev)
    assert bad.status_code == 422 and "llm-vs-llm" in bad.json()["detail"]
    # a case held by one reviewer is not handed to another meanwhile
    other = api.token("rev2", "reviewer", ["p"])
    r2 = api.client.get("/api/v1/projects/p/review/next", params={"kind": "llm_vs_human"}, headers=other)
    assert r2.status_code == 204


def test_a_resolution_is_final_gold_and_refits_reliability(api: Api) -> None:
    rev = escalate(api)
    before = {"gpt": reliability(api, "r0001", "gpt"), "ann": reliability(api, "r0001", "ann")}
    case = api.client.get("/api/v1/projects/p/review/next", params={"kind": "llm_vs_human"}, headers=rev).json()
    r = api.client.post(f"/api/v1/projects/p/review/{case['item_id']}/resolve",
                        json={"label": "negative", "note": "the human is right"}, headers=rev)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["status"], out["label"], out["decided_by"], out["confidence"]) == ("final", "negative", "adjudication", 1.0)
    with session_scope(api.engine) as s:
        gold = s.exec(select(Gold)).all()
    assert [(g.label, g.source) for g in gold] == [("negative", "adjudicated")]
    after = {"gpt": reliability(api, "r0001", "gpt"), "ann": reliability(api, "r0001", "ann")}
    assert after["ann"] > before["ann"] and after["gpt"] < before["gpt"], (before, after)
    assert api.client.get("/api/v1/projects/p/review/queue", headers=rev).json()["llm_vs_human"] == 0
    # settled is settled: a second resolution, or a refit, does not reopen it
    again = api.client.post("/api/v1/projects/p/review/r0001/resolve", json={"label": "positive"}, headers=rev)
    assert again.status_code == 409 and "not escalated" in again.json()["detail"]
    api.client.post("/api/v1/projects/p/consensus", headers=api.admin)
    assert api.item("p", "r0001")["status"] == "final"
    # a label outside the schema is refused by name
    bad = api.client.post("/api/v1/projects/p/review/r0000/resolve", json={"label": "postive"}, headers=rev)
    assert bad.status_code == 422 and "positive" in bad.json()["detail"]


def test_blind_review_shows_the_votes_only_after_the_reviewers_own_answer(api: Api) -> None:
    rev = escalate(api, blind_review=True)
    blind = api.client.get("/api/v1/projects/p/review/next", headers=rev).json()
    assert blind["blind"] is True and blind["votes"] == [] and blind["posterior"] is None
    item = blind["item_id"]
    early = api.client.post(f"/api/v1/projects/p/review/{item}/resolve", json={"label": "neutral"}, headers=rev)
    assert early.status_code == 409 and "blind" in early.json()["detail"]
    r = api.client.post(f"/api/v1/projects/p/review/{item}/blind", json={"label": "neutral"}, headers=rev)
    assert r.status_code == 204
    seen = api.client.get("/api/v1/projects/p/review/next", headers=rev).json()
    assert seen["item_id"] == item and seen["blind"] is False and len(seen["votes"]) == 2
    done = api.client.post(f"/api/v1/projects/p/review/{item}/resolve", json={"label": "neutral"}, headers=rev)
    assert done.status_code == 200 and done.json()["status"] == "final"


@pytest.mark.parametrize("after", ["_fit_project", "_changes"])
def test_a_background_refit_stores_in_chunks_and_keeps_decisions_made_meanwhile(
    api: Api, monkeypatch: pytest.MonkeyPatch, after: str,
) -> None:
    """A vote re-decides r0005 after the fit read the votes, or after the refit compared
    r0005's chunk outside its write transaction: the vote's decision stands either way."""
    api.project("p", target_confidence=0.8, min_human_votes=1)
    api.items("p", reviews(7))
    for i in range(6):
        for name in ("ann", "bob", "cy"):
            human_vote(api, "p", f"r{i:04d}", "positive" if i % 2 else "negative", name)
    stale = datetime(2000, 1, 1, tzinfo=UTC)  # a decision the refit would rewrite
    api.set_item("p", "r0005", status="open", next_kind="human", updated_at=stale)
    r0005 = api.db_item("p", "r0005").id
    monkeypatch.setattr(decisions, "STORE_CHUNK", 3)  # 7 items: chunks of 3, 3 and 1
    step = getattr(decisions, after)

    def then_a_vote_arrives(*args: Any, **kwargs: Any) -> Any:
        done = step(*args, **kwargs)
        if after == "_fit_project" or r0005 in args[0]:  # _changes(ids, …): r0005's chunk
            api.set_item("p", "r0005", status="open", next_kind="human", updated_at=utcnow())  # decided meanwhile
        return done

    monkeypatch.setattr(decisions, after, then_a_vote_arrives)
    decisions.refit_changed(api.engine, {})
    got = {f"r{i:04d}": api.item("p", f"r{i:04d}") for i in range(7)}
    assert all(got[f"r{i:04d}"]["status"] == "final" for i in range(5)), got
    assert [got[f"r{i:04d}"]["label"] for i in range(5)] == ["negative", "positive", "negative", "positive", "negative"]
    assert got["r0005"]["status"] == "open"  # the newer decision stands
    assert got["r0006"]["status"] == "open"  # no votes


def test_a_refit_rewrites_only_the_decisions_that_changed(api: Api) -> None:
    api.project("p", target_confidence=0.8, min_human_votes=1)
    api.items("p", reviews(5))
    for i in range(3):
        for name in ("ann", "bob"):
            human_vote(api, "p", f"r{i:04d}", "positive", name)
    decisions.refit_changed(api.engine, {})
    stamped = {f"r{i:04d}": api.db_item("p", f"r{i:04d}").updated_at for i in range(5)}
    decisions.refit_changed(api.engine, {})  # the same evidence: the same decisions, nothing written
    assert {f"r{i:04d}": api.db_item("p", f"r{i:04d}").updated_at for i in range(5)} == stamped
    human_vote(api, "p", "r0003", "negative", "cy")  # new evidence on one item
    decisions.refit_changed(api.engine, {})
    after = api.db_item("p", "r0003")
    assert after.updated_at > stamped["r0003"] and after.posterior["negative"] > 0.5
    # the class prior moved, but an item nobody voted on keeps its outcome: not rewritten for it
    untouched = api.db_item("p", "r0004")
    assert untouched.status == "open" and untouched.updated_at == stamped["r0004"]
