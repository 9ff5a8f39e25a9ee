"""The closed loop for a model in training: batches, signed callbacks, retries, deadlines,
polling, and callback URLs to internal addresses refused unless the admin allows them."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import select

from llmlabel.access import create_token
from llmlabel.api import ApiSettings, create_app
from llmlabel.callbacks import SIGNATURE_HEADER, TIMESTAMP_HEADER, deliver_due
from llmlabel.config import parse_config
from llmlabel.projects import sync_project
from llmlabel.store.db import session_scope
from llmlabel.store.tables import BatchItem, Item, utcnow


class _Receiver:
    """A loopback HTTP endpoint that fails its first call, then records what it is sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = True
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((dict(self.headers), body))
                status = 500 if receiver.fail_first else 200
                receiver.fail_first = False
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/labels"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()


def _setup(engine) -> str:
    config = parse_config({"name": "loop", "labels": {"type": "single", "classes": ["cat", "dog"]}})
    with session_scope(engine) as s:
        sync_project(s, config=config)
        return create_token(s, name="trainer", role="admin")


def test_private_callback_urls_are_refused_by_default(engine) -> None:
    token = _setup(engine)
    client = TestClient(create_app(engine, ApiSettings(callback_interval_seconds=0, refit_interval_seconds=0)))
    r = client.post("/api/v1/projects/loop/batches", headers={"Authorization": f"Bearer {token}"},
                    json={"items": [{"id": "x1", "text": "a"}], "callback_url": "http://127.0.0.1:9/hook"})
    assert r.status_code == 422 and "private, loopback or reserved" in r.json()["detail"]
    with engine.connect() as conn:
        assert conn.execute(select(Item.id)).first() is None, "nothing may be imported for a refused batch"


def test_decided_items_are_called_back_signed_retried_and_pollable(engine) -> None:
    token = _setup(engine)
    settings = ApiSettings(callback_interval_seconds=0, refit_interval_seconds=0, allow_private_callbacks=True)
    client = TestClient(create_app(engine, settings))
    auth = {"Authorization": f"Bearer {token}"}
    past = (utcnow() - timedelta(minutes=1)).isoformat()
    with _Receiver() as receiver:
        r = client.post("/api/v1/projects/loop/batches", headers=auth, json={
            "callback_url": receiver.url,
            "items": [{"id": "a", "text": "meow"}, {"id": "b", "text": "woof", "deadline": past}, {"id": "c", "text": "?"}],
        })
        assert r.status_code == 201, r.text
        batch, secret = r.json()["batch_id"], r.json()["secret"]
        with session_scope(engine) as s:  # item a is decided; b is not, but its deadline has passed
            a = s.exec(select(Item).where(Item.external_id == "a")).one()
            a.status, a.final_label, a.confidence, a.decided_by = "final", "cat", 0.99, "consensus"
            b = s.exec(select(Item).where(Item.external_id == "b")).one()
            b.posterior, b.confidence = {"cat": 0.2, "dog": 0.8}, 0.8

        first = deliver_due(engine, allow_private=True)
        assert len(receiver.calls) == 2 and first == 1, "two due callbacks sent, the receiver failed one"
        assert deliver_due(engine, allow_private=True) == 0, "a failed callback waits for its backoff"
        with session_scope(engine) as s:
            failed = s.exec(select(BatchItem).where(BatchItem.delivered_at.is_(None), BatchItem.attempts == 1)).one()  # type: ignore[union-attr]
            assert failed.last_error and failed.next_attempt_at > utcnow()
            failed.next_attempt_at = utcnow() - timedelta(seconds=1)
        assert deliver_due(engine, allow_private=True) == 1

    payloads = {}
    for headers, body in receiver.calls:
        expected = "sha256=" + hmac.new(secret.encode(), headers[TIMESTAMP_HEADER].encode() + b"." + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected), "every callback is signed with the batch secret"
        payload = json.loads(body)
        payloads[payload["item_id"]] = payload
    assert payloads["a"]["label"] == "cat" and payloads["a"]["at_deadline"] is False
    assert payloads["b"]["label"] == "dog" and payloads["b"]["at_deadline"] is True, "best answer at the deadline, marked"
    assert "c" not in payloads, "an undecided item without a deadline is not called back"

    polled = client.get(f"/api/v1/projects/loop/batches/{batch}", headers=auth).json()
    by_id = {i["item_id"]: i for i in polled["items"]}
    assert by_id["a"]["delivered"] and by_id["b"]["delivered"] and not by_id["c"]["delivered"]
    assert by_id["c"]["label"] is None and by_id["c"]["status"] == "open"
