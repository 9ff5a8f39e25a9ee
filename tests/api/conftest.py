"""Helpers for the API tests: the real app over a real database (SQLite and PostgreSQL), an
admin token made the way the CLI makes it, and short calls for the common requests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from llmlabel.access import create_token
from llmlabel.api import ApiSettings, create_app
from llmlabel.projects import get_or_create_voter
from llmlabel.quality import gating
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Item, Lease, Project, Vote, Voter
from llmlabel.votes import VoteInput, record_vote

Headers = dict[str, str]


def project_config(name: str, **policy: Any) -> dict[str, Any]:
    """A small single-choice project; no qualification and no gold unless the test asks."""
    return {
        "name": name,
        "instructions": {"guidelines": "Pick the sentiment of the review."},
        "labels": {"type": "single", "classes": ["positive", "negative", "neutral"]},
        "item_template": "{{ text }}",
        "policy": {"qualification_tasks": 0, "gold_rate": 0.0, **policy},
    }


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Api:
    """The app in-process (TestClient: real ASGI, real routing and middleware) on a real database."""

    client: TestClient
    engine: Engine
    admin: Headers

    def token(self, name: str, role: str, projects: Sequence[str] = ()) -> Headers:
        r = self.client.post("/api/v1/tokens", json={"name": name, "role": role, "projects": list(projects)},
                             headers=self.admin)
        assert r.status_code == 201, r.text
        return bearer(r.json()["token"])

    def project(self, name: str, **policy: Any) -> str:
        r = self.client.put(f"/api/v1/projects/{name}", json={"config": project_config(name, **policy)},
                            headers=self.admin)
        assert r.status_code == 200, r.text
        return name

    def items(self, project: str, rows: list[dict[str, Any]], gold_field: str | None = None) -> None:
        r = self.client.post(f"/api/v1/projects/{project}/items", json={"items": rows, "gold_field": gold_field},
                             headers=self.admin)
        assert r.status_code == 201, r.text
        assert r.json()["bad"] == 0, r.json()

    def next(self, project: str, who: Headers) -> httpx.Response:
        return self.client.get(f"/api/v1/projects/{project}/tasks/next", headers=who)

    def task(self, project: str, who: Headers) -> dict[str, Any]:
        r = self.next(project, who)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def vote(self, project: str, who: Headers, lease: str, label: Any = "positive", key: str | None = None,
             **extra: Any) -> httpx.Response:
        headers = {**who, **({"Idempotency-Key": key} if key else {})}
        return self.client.post(f"/api/v1/projects/{project}/tasks/{lease}/vote",
                                json={"label": label, **extra}, headers=headers)

    def item(self, project: str, item_id: str) -> dict[str, Any]:
        r = self.client.get(f"/api/v1/projects/{project}/items/{item_id}", headers=self.admin)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    # direct database access, for what the API must never show

    def db_item(self, project: str, external_id: str) -> Item:
        with session_scope(self.engine) as s:
            return s.execute(select(Item).join(Project, Project.id == Item.project_id)  # type: ignore[arg-type]
                             .where(Project.name == project, Item.external_id == external_id)).scalar_one()

    def set_item(self, project: str, external_id: str, **values: Any) -> None:
        item = self.db_item(project, external_id)
        with session_scope(self.engine) as s:
            s.execute(update(Item).where(Item.id == item.id).values(**values))  # type: ignore[arg-type]

    def lease(self, token: str) -> Lease:
        with session_scope(self.engine) as s:
            return s.execute(select(Lease).where(Lease.token == token)).scalar_one()

    def voter(self, project: str, name: str) -> Voter:
        with session_scope(self.engine) as s:
            return s.execute(select(Voter).join(Project, Project.id == Voter.project_id)  # type: ignore[arg-type]
                             .where(Project.name == project, Voter.name == name)).scalar_one()

    def vote_rows(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Vote)).scalar_one())


@pytest.fixture
def admin_token(engine: Engine) -> str:
    with session_scope(engine) as session:  # as `llmlabel token create --role admin` does
        return create_token(session, name="root", role="admin")


@pytest.fixture
def api(engine: Engine, admin_token: str) -> Iterator[Api]:
    with TestClient(create_app(engine)) as client:
        yield Api(client, engine, bearer(admin_token))


def reviews(n: int, start: int = 0, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"r{i:04d}", "text": f"review number {i}", **extra} for i in range(start, start + n)]


def llm_vote(api: Api, project: str, item_external_id: str, label: str, labeler: str = "gpt") -> None:
    """An LLM labeler's vote, stored the way ``llmlabel label`` stores it."""
    _store_vote(api, project, item_external_id, labeler, "llm",
                VoteInput(label=label, confidence=0.9, confidence_method="logprobs", rationale="it says so"))


def human_vote(api: Api, project: str, item_external_id: str, label: str, name: str) -> None:
    """A human vote stored directly, for setting up a case (tasks are tested through the API)."""
    _store_vote(api, project, item_external_id, name, "human", VoteInput(label=label, confidence_method="human"))


def _store_vote(api: Api, project: str, item_external_id: str, name: str, kind: str, vote: VoteInput) -> None:
    item = api.db_item(project, item_external_id)
    with session_scope(api.engine) as s:
        voter = get_or_create_voter(s, project_id=item.project_id, name=name, kind=kind)
        s.flush()
        record_vote(s, project_id=item.project_id, item_id=item.id, voter_id=voter.id, vote=vote)  # type: ignore[arg-type]


def force_gold(monkeypatch: pytest.MonkeyPatch, gold: bool) -> None:
    """Decide the gold coin of the next tasks (the rate itself is tested in test_gold)."""
    monkeypatch.setattr(gating, "random", SimpleNamespace(random=lambda: 0.0 if gold else 0.999))


# a real server on loopback


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving the app on 127.0.0.1 in a thread of this process."""

    def __init__(self, engine: Engine, settings: ApiSettings | None = None) -> None:
        self.port = free_port()
        config = uvicorn.Config(create_app(engine, settings), host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live(engine: Engine) -> Iterator[LiveServer]:
    with LiveServer(engine) as server:
        yield server
