"""Malformed requests get a 4xx that names what is wrong; bodies are capped (413); never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from llmlabel.api import ApiSettings, create_app

from .conftest import Api, LiveServer, project_config, reviews


def fields_named(r: httpx.Response) -> str:
    """The error's text, whether it comes from request validation (a list) or a service (a string)."""
    detail = r.json()["detail"]
    if isinstance(detail, list):
        return " ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in detail)
    return str(detail)


def test_malformed_requests_name_the_field(api: Api) -> None:
    api.project("p")
    api.items("p", reviews(3))
    ann = api.token("ann", "annotator", ["p"])
    lease = api.task("p", ann)["lease_token"]
    vote = f"/api/v1/projects/p/tasks/{lease}/vote"
    cases: list[tuple[str, str, dict[str, Any], Any, str]] = [
        # method, path, headers, body, a word the answer must contain
        ("POST", vote, ann, {"label": {"a": 1}}, "label"),
        ("POST", vote, ann, {"label": "postive"}, "did you mean 'positive'"),
        ("POST", vote, ann, {}, "label"),
        ("POST", vote, ann, {"label": "positive", "confidence": 1}, "confidence"),
        ("POST", vote, ann, {"label": "positive", "unsure": "maybe"}, "unsure"),
        ("POST", vote, ann, {"label": "positive", "comment": "x" * 5001}, "comment"),
        ("POST", vote, ann, {"label": "positive", "predicted_distribution": {"positive": "lots"}}, "predicted_distribution"),
        ("POST", vote, {**ann, "Idempotency-Key": "k" * 129}, {"label": "positive"}, "Idempotency-Key"),
        ("POST", vote, ann, [1, 2], "body"),
        ("POST", "/api/v1/tokens", api.admin, {"name": "x", "role": "superuser"}, "role"),
        ("POST", "/api/v1/tokens", api.admin, {"name": "", "role": "annotator"}, "name"),
        ("POST", "/api/v1/tokens", api.admin, {"name": "x", "role": "annotator", "projects": ["nope"]}, "nope"),
        ("POST", "/api/v1/projects/p/items", api.admin, {"items": []}, "items"),
        ("POST", "/api/v1/projects/p/items", api.admin, {"items": [{"text": "no id"}]}, "id"),
        ("POST", "/api/v1/projects/p/items", api.admin, {"items": [{"id": "a"}], "on_error": "ignore"}, "on_error"),
        ("PUT", "/api/v1/projects/p", api.admin, {"config": {**project_config("p"), "polcy": {}}}, "polcy"),
        ("PUT", "/api/v1/projects/p", api.admin, {"config": project_config("q")}, "config.name"),
        ("PUT", "/api/v1/projects/p", api.admin, {"config": {**project_config("p"), "policy": {"gold_rate": 2}}},
         "policy.gold_rate"),
        ("PUT", "/api/v1/projects/p", api.admin, {"config": "name: p"}, "config"),
        ("GET", "/api/v1/projects/p/review/next?kind=all", api.admin, None, "kind"),
        ("POST", "/api/v1/projects/p/review/r0001/resolve", api.admin, {"label": 3.5}, "label"),
        ("POST", "/api/v1/projects/p/batches", api.admin, {"items": [{"id": "z", "deadline": "tomorrow"}]}, "deadline"),
        ("GET", "/api/v1/projects/p/batches/not-a-number", api.admin, None, "batch_id"),
    ]
    problems = []
    for method, path, headers, body, word in cases:
        r = api.client.request(method, path, json=body, headers=headers)
        if not 400 <= r.status_code < 500 or word not in fields_named(r):
            problems.append(f"{method} {path} {body!r:.80}: {r.status_code} {r.text[:300]}")
    assert not problems, "\n".join(problems)
    assert api.vote_rows() == 0
    assert api.vote("p", ann, lease).status_code == 201  # the lease survived all of it


def test_invalid_json_is_422_naming_the_position(api: Api) -> None:
    r = api.client.post("/api/v1/tokens", content=b'{"name": "x", "role": ', headers={**api.admin,
                        "Content-Type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.text


def test_bodies_over_the_cap_are_413(engine: Engine, admin_token: str) -> None:
    headers = {"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"}
    app = create_app(engine, ApiSettings(max_body_bytes=10_000, callback_interval_seconds=0))
    big = b'{"items": [' + b",".join(b'{"id": "%d", "text": "xxxxxxxxxx"}' % i for i in range(1000)) + b"]}"
    with TestClient(app) as client:
        assert client.put("/api/v1/projects/p", json={"config": project_config("p")}, headers=headers).status_code == 200
        r = client.post("/api/v1/projects/p/items", content=big, headers=headers)
        assert r.status_code == 413 and "10000 bytes" in r.json()["detail"]

    # on a real server, without a Content-Length (chunked), the cap holds while reading
    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 1000):
            yield big[i:i + 1000]

    with LiveServer(engine, ApiSettings(max_body_bytes=10_000, callback_interval_seconds=0)) as server:
        r = httpx.post(f"{server.url}/api/v1/projects/p/items", content=chunks(), headers=headers)
        assert r.status_code == 413, r.text
        small = httpx.post(f"{server.url}/api/v1/projects/p/items",
                           content=iter([b'{"items": [{"id": "ok",', b' "text": "fine"}]}']), headers=headers)
        assert small.status_code == 201, small.text
