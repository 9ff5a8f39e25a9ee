"""Hidden gold through the API: served at the project's rate, a qualification run for new
annotators, and gating (403, and the gated annotator's votes leave consensus)."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import select

from llmlabel.config import Policy
from llmlabel.quality import gating
from llmlabel.quality.gating import GoldRecord, gold_rate, gold_record
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Gold, Item, Project, Vote

from .conftest import Api, Headers, force_gold, reviews

LABELS = ("positive", "negative", "neutral")


def gold_rows(n_gold: int, n_plain: int) -> tuple[list[dict[str, str]], dict[str, str]]:
    rows = reviews(n_gold + n_plain)
    truth = {r["id"]: LABELS[i % 3] for i, r in enumerate(rows[:n_gold])}
    return [{**r, "gold": truth.get(r["id"], "")} for r in rows], truth


def setup_gold(api: Api, n_gold: int, n_plain: int, **policy: object) -> dict[str, str]:
    api.project("p", **policy)
    rows, truth = gold_rows(n_gold, n_plain)
    api.items("p", rows, gold_field="gold")
    assert api.client.post("/api/v1/projects/p/consensus", headers=api.admin).status_code == 200
    return truth


def answer(api: Api, who: Headers, truth: dict[str, str], *, wrong: bool = False) -> tuple[str, bool]:
    """Take the next task and answer it (gold right, or wrong on purpose); (item, was gold)."""
    t = api.task("p", who)
    is_gold = api.lease(t["lease_token"]).is_gold
    label = truth.get(t["item_id"], "positive")
    if wrong and is_gold:
        label = next(x for x in LABELS if x != label)
    assert api.vote("p", who, t["lease_token"], label).status_code == 201
    return t["item_id"], is_gold


def test_gold_is_served_at_the_base_rate(api: Api) -> None:
    truth = setup_gold(api, 60, 60, gold_rate=0.3)
    a = api.token("a", "annotator", ["p"])
    random.seed(20240601)
    served = [answer(api, a, truth) for _ in range(50)]
    gold = sum(g for _, g in served)
    assert 6 <= gold <= 26, f"{gold} gold tasks of 50 at a rate of 0.3"
    assert all((item in truth) == g for item, g in served)  # gold leases are exactly the gold items
    assert api.voter("p", "a").status == "active"


def test_gold_comes_more_often_while_recent_gold_answers_are_wrong(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    truth = setup_gold(api, 40, 100, gold_rate=0.05, quality_bar=0.3)
    a = api.token("a", "annotator", ["p"])
    force_gold(monkeypatch, True)
    assert all(answer(api, a, truth)[1] for _ in range(20))
    coin = SimpleNamespace(random=lambda: 0.15)  # over the base rate (0.05), under the raised one (0.2)
    monkeypatch.setattr(gating, "random", coin)
    assert answer(api, a, truth)[1] is False
    force_gold(monkeypatch, True)
    assert all(answer(api, a, truth, wrong=True)[1] for _ in range(8))  # 2 of the last 10 right
    monkeypatch.setattr(gating, "random", coin)
    assert api.voter("p", "a").status == "active"  # 22 of 28 overall: not gated
    assert answer(api, a, truth)[1] is True


@pytest.mark.parametrize(("base", "raised"), [(0.02, 0.2), (0.1, 0.2), (0.2, 0.4), (0.3, 0.5), (0.6, 0.6)])
def test_the_raised_gold_rate_is_never_under_the_base_rate(base: float, raised: float) -> None:
    policy = Policy(gold_rate=base, quality_bar=0.7)
    assert gold_rate((True, True, True), policy) == base
    assert gold_rate((False, True, False), policy) == pytest.approx(raised)
    assert gold_rate((False, False), policy) == base  # too few answers to judge


def test_a_gold_draw_reads_the_record_only_between_the_two_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy(gold_rate=0.05, quality_bar=0.7)  # raised rate 0.2
    no_database: Any = None  # reading the record would fail
    for draw, gold in ((0.0, True), (0.049, True), (0.2, False), (0.99, False)):
        monkeypatch.setattr(gating, "random", SimpleNamespace(random=lambda d=draw: d))
        assert gating.wants_gold(no_database, voter_id=1, policy=policy) is gold
    monkeypatch.setattr(gating, "random", SimpleNamespace(random=lambda: 0.1))
    with pytest.raises(AttributeError):
        gating.wants_gold(no_database, voter_id=1, policy=policy)


def test_a_new_annotator_gets_gold_only_until_qualified(api: Api) -> None:
    truth = setup_gold(api, 6, 10, qualification_tasks=3, quality_bar=0.5)
    good = api.token("good", "annotator", ["p"])
    served = [answer(api, good, truth) for _ in range(3)]
    assert [g for _, g in served] == [True, True, True]
    assert api.voter("p", "good").status == "active"
    assert [answer(api, good, truth)[1] for _ in range(3)] == [False] * 3  # gold_rate is 0
    # one who fails the qualification is gated before ever touching real work
    bad = api.token("bad", "annotator", ["p"])
    assert [answer(api, bad, truth, wrong=True)[1] for _ in range(3)] == [True, True, True]
    assert api.voter("p", "bad").status == "gated"
    r = api.next("p", bad)
    assert r.status_code == 403 and "quality bar" in r.json()["detail"]


def test_a_qualifying_annotator_without_gold_left_gets_nothing(api: Api) -> None:
    truth = setup_gold(api, 1, 5, qualification_tasks=3, quality_bar=0.5)
    a = api.token("a", "annotator", ["p"])
    assert answer(api, a, truth)[1] is True
    assert api.next("p", a).status_code == 204
    assert api.voter("p", "a").status == "qualifying"


def test_gating_pauses_the_annotator_and_reopens_what_they_decided(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    truth = setup_gold(api, 3, 1, gold_rate=0.5, quality_bar=0.5, min_human_votes=1, target_confidence=0.65)
    sloppy, other = api.token("sloppy", "annotator", ["p"]), api.token("other", "annotator", ["p"])
    force_gold(monkeypatch, False)
    item, _ = answer(api, sloppy, truth)
    decided = api.item("p", item)
    assert (decided["status"], decided["label"]) == ("final", "positive"), decided
    assert api.next("p", other).status_code == 204  # nothing left to do
    force_gold(monkeypatch, True)
    assert [answer(api, sloppy, truth, wrong=True)[1] for _ in range(3)] == [True, True, True]
    assert api.voter("p", "sloppy").status == "gated"
    r = api.next("p", sloppy)
    assert r.status_code == 403 and "sloppy" in r.json()["detail"]
    reopened = api.item("p", item)
    assert reopened["status"] == "open" and reopened["label"] is None
    assert max(reopened["posterior"].values()) < decided["confidence"]  # the vote no longer counts
    assert len(reopened["votes"]) == 1  # kept for the record, out of consensus
    force_gold(monkeypatch, False)
    assert api.task("p", other)["item_id"] == item  # back in the pool


def test_an_answer_counts_for_gating_whether_its_gold_came_before_or_after_it(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    truth = setup_gold(api, 2, 4, gold_rate=0.01)
    a = api.token("a", "annotator", ["p"])
    force_gold(monkeypatch, False)
    first, was_gold = answer(api, a, truth)  # "positive" on a plain item
    assert not was_gold
    second, _ = answer(api, a, truth)
    voter = api.voter("p", "a")
    assert gold_record_of(api, voter.id) == GoldRecord(0, 0, ())
    # both items become gold after the votes: one through an import, one through a review
    rows = {r["id"]: r for r in reviews(6)}
    api.items("p", [{**rows[first], "gold": "positive"}], gold_field="gold")
    force_gold(monkeypatch, True)
    gold_item, was_gold = answer(api, a, truth, wrong=True)
    assert was_gold and gold_item in truth
    assert gold_record_of(api, voter.id) == GoldRecord(1, 2, (True, False))
    with session_scope(api.engine) as s:
        project = s.execute(select(Project).where(Project.name == "p")).scalar_one()
        item = s.execute(select(Item).where(Item.project_id == project.id, Item.external_id == second)).scalar_one()
        item.status = "escalated"  # as consensus would leave a contested item
        s.add(item)
    reviewer = api.token("r", "reviewer", ["p"])
    r = api.client.post(f"/api/v1/projects/p/review/{second}/resolve", json={"label": "negative", "note": "n"},
                        headers=reviewer)
    assert r.status_code == 200, r.text
    assert gold_record_of(api, voter.id) == GoldRecord(1, 3, (True, False, False))
    with session_scope(api.engine) as s:  # the same labels in other JSON texts: compared as labels
        pg = api.engine.dialect.name == "postgresql"
        s.execute(text("UPDATE gold SET label = (' ' || label::text)::json" if pg else "UPDATE gold SET label = ' ' || label"))
    assert gold_record_of(api, voter.id) == GoldRecord(1, 3, (True, False, False))
    with session_scope(api.engine) as s:  # the stored flags are exactly "the item has gold"
        flags = s.execute(select(Vote.item_id, Vote.on_gold)).all()
        gold = set(s.execute(select(Gold.item_id)).scalars())
    assert flags and all(flag == (item_id in gold) for item_id, flag in flags)


def gold_record_of(api: Api, voter_id: int) -> GoldRecord:
    with session_scope(api.engine) as s:
        return gold_record(s, voter_id=voter_id)
