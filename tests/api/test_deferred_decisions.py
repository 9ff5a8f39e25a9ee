"""A running server re-decides voted items in batches: nothing waits longer than a batch, a
read sees the decision a vote led to, and a batch that fails loses nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from llmlabel import decisions
from llmlabel.api import ApiSettings, create_app
from llmlabel.projects import get_project, project_config
from llmlabel.store.db import session_scope

from .conftest import Api, bearer, reviews


def _api(engine: Engine, admin_token: str, seconds: float) -> Iterator[Api]:
    with TestClient(create_app(engine, ApiSettings(decision_batch_seconds=seconds))) as client:
        yield Api(client, engine, bearer(admin_token))


@pytest.fixture
def slow_batches(engine: Engine, admin_token: str) -> Iterator[Api]:
    yield from _api(engine, admin_token, 0.3)


@pytest.fixture
def inline(engine: Engine, admin_token: str) -> Iterator[Api]:
    yield from _api(engine, admin_token, 0)


def _vote_once(api: Api) -> str:
    api.project("p", min_human_votes=1, target_confidence=0.75)
    api.items("p", reviews(2))
    who = api.token("a", "annotator", ["p"])
    task = api.task("p", who)
    assert api.vote("p", who, task["lease_token"], "positive").status_code == 201
    return str(task["item_id"])


def test_the_batch_decides_without_anyone_reading(slow_batches: Api) -> None:
    item = _vote_once(slow_batches)
    waiting = slow_batches.db_item("p", item)
    assert (waiting.status, waiting.votes_needed) == ("open", 0)  # stored, counted down, not yet decided
    deadline = time.monotonic() + 5
    while slow_batches.db_item("p", item).status != "final":
        assert time.monotonic() < deadline, "the batch never came"
        time.sleep(0.05)
    assert not decisions.has_deferred(slow_batches.engine)


def test_a_read_applies_what_waits(slow_batches: Api) -> None:
    item = _vote_once(slow_batches)
    assert slow_batches.item("p", item)["status"] == "final"  # long before the 0.3 s batch


def test_without_batches_the_vote_decides_its_item(inline: Api) -> None:
    item = _vote_once(inline)
    assert inline.db_item("p", item).status == "final"
    assert not decisions.has_deferred(inline.engine)


def test_a_failed_batch_leaves_its_items_waiting(slow_batches: Api) -> None:
    item = _vote_once(slow_batches)
    engine = slow_batches.engine
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        project = get_project(s, name="p")
        assert decisions.settle_deferred(s, project=project, config=project_config(s, project=project)) == 1
        raise RuntimeError("the transaction fails after deciding")
    assert slow_batches.db_item("p", item).status == "open"
    assert decisions.has_deferred(engine)
    assert slow_batches.item("p", item)["status"] == "final"
