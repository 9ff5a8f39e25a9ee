"""Every route × every role, generated from the OpenAPI document, so a new route without a row
in ``EXPECTED`` fails here. Each request is otherwise valid (real ids, real lease tokens, good
bodies), so the status says what the role may do, not what the body got wrong."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from llmlabel.access import hash_token, revoke_tokens
from llmlabel.cli import main
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Alert, ApiToken

from .conftest import Api, Headers, bearer, project_config, reviews

# who is asking: members of project "alpha", members of another project only, and no one
ROLES = ("admin", "reviewer", "annotator", "other_reviewer", "other_annotator", "no_token", "bad_token")

_ANON = (401, 401)  # no token, bad token
EXPECTED: dict[tuple[str, str], tuple[int, ...]] = {
    # (method, path):                               admin rev  ann  o-rev o-ann  none, bad
    ("GET", "/api/v1/health"):                        (200, 200, 200, 200, 200, 200, 200),
    ("GET", "/api/v1/projects"):                      (200, 200, 200, 200, 200, *_ANON),
    ("GET", "/api/v1/projects/{name}"):               (200, 200, 403, 404, 404, *_ANON),
    ("PUT", "/api/v1/projects/{name}"):               (200, 403, 403, 404, 404, *_ANON),
    ("POST", "/api/v1/projects/{name}/consensus"):    (200, 403, 403, 404, 404, *_ANON),
    ("POST", "/api/v1/tokens"):                       (201, 403, 403, 403, 403, *_ANON),
    ("POST", "/api/v1/projects/{name}/items"):        (201, 403, 403, 404, 404, *_ANON),
    ("GET", "/api/v1/projects/{name}/items/{item_id}"): (200, 200, 403, 404, 404, *_ANON),
    ("GET", "/api/v1/projects/{name}/tasks/next"):    (403, 403, 200, 404, 404, *_ANON),
    ("POST", "/api/v1/projects/{name}/tasks/{lease_token}/vote"): (403, 403, 201, 404, 404, *_ANON),
    ("POST", "/api/v1/projects/{name}/tasks/{lease_token}/release"): (403, 403, 204, 404, 404, *_ANON),
    ("GET", "/api/v1/projects/{name}/review/queue"):  (200, 200, 403, 404, 404, *_ANON),
    ("GET", "/api/v1/projects/{name}/review/next"):   (200, 200, 403, 404, 404, *_ANON),
    ("POST", "/api/v1/projects/{name}/review/{item_id}/blind"): (204, 204, 403, 404, 404, *_ANON),
    ("POST", "/api/v1/projects/{name}/review/{item_id}/resolve"): (200, 200, 403, 404, 404, *_ANON),
    ("POST", "/api/v1/projects/{name}/batches"):      (201, 403, 403, 404, 404, *_ANON),
    ("GET", "/api/v1/projects/{name}/batches/{batch_id}"): (200, 403, 403, 404, 404, *_ANON),
    ("GET", "/api/v1/projects/{name}/alerts"):        (200, 200, 403, 404, 404, *_ANON),
    ("POST", "/api/v1/projects/{name}/alerts/check"): (200, 403, 403, 404, 404, *_ANON),
    ("POST", "/api/v1/projects/{name}/alerts/{alert_id}/ack"): (200, 403, 403, 404, 404, *_ANON),
    ("GET", "/api/v1/projects/{name}/agreement"):     (200, 200, 403, 404, 404, *_ANON),
    ("GET", "/api/v1/projects/{name}/report"):        (200, 200, 403, 404, 404, *_ANON),
    ("GET", "/metrics"):                              (200, 200, 403, 200, 403, *_ANON),  # its own projects only
}


class World:
    """Project alpha (with a reviewer and an annotator), project beta (with its own), and a
    fresh resource for each request: an item, an escalated item, or a lease of alpha's annotator."""

    def __init__(self, api: Api) -> None:
        self.api = api
        api.project("alpha")
        api.project("beta")
        api.items("alpha", reviews(40))
        api.items("beta", reviews(5))
        self.who: dict[str, Headers] = {
            "admin": api.admin,
            "reviewer": api.token("rev", "reviewer", ["alpha"]),
            "annotator": api.token("ann", "annotator", ["alpha"]),
            "other_reviewer": api.token("rev-b", "reviewer", ["beta"]),
            "other_annotator": api.token("ann-b", "annotator", ["beta"]),
            "no_token": {},
            "bad_token": bearer("llml_not-a-real-token"),
        }
        self.n = itertools.count()

    def fresh_item(self, escalated: bool = False) -> str:
        item_id = f"m{next(self.n):04d}"
        self.api.items("alpha", [{"id": item_id, "text": "fresh"}])
        if escalated:
            self.api.set_item("alpha", item_id, status="escalated", conflict_kind="human_vs_human", votes_needed=0)
        return item_id

    def lease(self) -> str:
        return str(self.api.task("alpha", self.who["annotator"])["lease_token"])

    def batch(self) -> str:
        r = self.api.client.post("/api/v1/projects/alpha/batches", json={"items": [{"id": f"b{next(self.n)}", "text": "x"}]},
                                 headers=self.api.admin)
        assert r.status_code == 201, r.text
        return str(r.json()["batch_id"])

    def alert(self) -> str:
        project_id = self.api.db_item("alpha", "r0000").project_id
        with session_scope(self.api.engine) as session:
            alert = Alert(project_id=project_id, kind="drift", message="agreement fell")
            session.add(alert)
            session.flush()
            return str(alert.id)

    def request(self, method: str, path: str) -> tuple[str, Any]:
        """The concrete path and a valid body for a route."""
        params: dict[str, Callable[[], str]] = {
            "name": lambda: "alpha",
            "item_id": lambda: self.fresh_item(escalated="/review/" in path),
            "lease_token": self.lease,
            "batch_id": self.batch,
            "alert_id": self.alert,
        }
        concrete = path
        for key, make in params.items():
            if "{" + key + "}" in concrete:
                concrete = concrete.replace("{" + key + "}", make())
        bodies: dict[tuple[str, str], Callable[[], Any]] = {
            ("PUT", "/api/v1/projects/{name}"): lambda: {"config": project_config("alpha")},
            ("POST", "/api/v1/tokens"): lambda: {"name": f"acct{next(self.n)}", "role": "annotator"},
            ("POST", "/api/v1/projects/{name}/items"): lambda: {"items": [{"id": f"new{next(self.n)}", "text": "x"}]},
            ("POST", "/api/v1/projects/{name}/tasks/{lease_token}/vote"): lambda: {"label": "positive"},
            ("POST", "/api/v1/projects/{name}/review/{item_id}/blind"): lambda: {"label": "negative"},
            ("POST", "/api/v1/projects/{name}/review/{item_id}/resolve"): lambda: {"label": "negative"},
            ("POST", "/api/v1/projects/{name}/batches"): lambda: {"items": [{"id": f"b{next(self.n)}", "text": "x"}]},
        }
        if (method, path) == ("GET", "/api/v1/projects/{name}/review/next"):
            self.fresh_item(escalated=True)  # something to review
        make_body = bodies.get((method, path))
        return concrete, make_body() if make_body else None


def operations(api: Api) -> set[tuple[str, str]]:
    spec = api.client.app.openapi()  # type: ignore[attr-defined]
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}


def test_every_route_has_a_row_in_the_table(api: Api) -> None:
    ops = operations(api)
    assert ops - set(EXPECTED) == set(), "routes without expected statuses: add them to EXPECTED"
    assert set(EXPECTED) - ops == set(), "EXPECTED lists routes the app does not have"


def test_every_route_for_every_role(api: Api) -> None:
    world = World(api)
    failures = []
    for (method, path), statuses in sorted(EXPECTED.items()):
        assert len(statuses) == len(ROLES)
        for role, expected in zip(ROLES, statuses, strict=True):
            concrete, body = world.request(method, path)
            r = api.client.request(method, concrete, json=body, headers=world.who[role])
            if r.status_code != expected:
                failures.append(f"{method} {path} as {role}: {r.status_code} (expected {expected}) {r.text[:200]}")
            elif expected == 401:
                assert r.headers.get("www-authenticate") == "Bearer"
                assert "token" in r.json()["detail"]
            elif expected in (403, 404):
                assert r.json()["detail"], r.text
    assert not failures, "\n".join(failures)


def test_docs_and_openapi_are_served(api: Api) -> None:
    assert api.client.get("/docs").status_code == 200
    spec = api.client.get("/openapi.json").json()
    assert spec["info"]["title"] == "llmlabel"


def test_malformed_or_revoked_tokens_are_401(api: Api) -> None:
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "llml_raw-token-without-scheme"):
        r = api.client.get("/api/v1/projects", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert "Bearer" in r.json()["detail"]
    api.project("alpha")
    ann = api.token("ann", "annotator", ["alpha"])
    assert api.client.get("/api/v1/projects", headers=ann).status_code == 200
    with session_scope(api.engine) as session:
        assert revoke_tokens(session, name="ann") == 1
    assert api.client.get("/api/v1/projects", headers=ann).status_code == 401


def test_tokens_are_hashed_at_rest_and_shown_once(api: Api) -> None:
    r = api.client.post("/api/v1/tokens", json={"name": "ann", "role": "annotator"}, headers=api.admin)
    token = r.json()["token"]
    with session_scope(api.engine) as session:
        stored = dict(session.execute(select(ApiToken.token_hash, ApiToken.prefix)).all())
    assert token not in stored and hash_token(token) in stored  # only the hash is kept
    assert stored[hash_token(token)] == token[:12]  # and a prefix, to tell tokens apart
    # a second token for the same account is a new secret; the first keeps working
    again = api.client.post("/api/v1/tokens", json={"name": "ann", "role": "annotator"}, headers=api.admin).json()
    assert again["token"] != token
    assert api.client.get("/api/v1/projects", headers=bearer(token)).status_code == 200


def test_project_list_shows_only_member_projects(api: Api) -> None:
    api.project("alpha")
    api.project("beta")
    ann = api.token("ann", "annotator", ["alpha"])
    assert [p["name"] for p in api.client.get("/api/v1/projects", headers=ann).json()] == ["alpha"]
    assert [p["name"] for p in api.client.get("/api/v1/projects", headers=api.admin).json()] == ["alpha", "beta"]


def test_a_resource_of_another_project_is_404(api: Api) -> None:
    api.project("alpha")
    api.project("beta")
    api.items("alpha", reviews(3))
    api.items("beta", [{"id": "only-in-beta", "text": "b"}, {"id": "beta-2", "text": "c"}])
    both = api.token("ann", "annotator", ["alpha", "beta"])
    rev = api.token("rev", "reviewer", ["alpha", "beta"])
    # an item of beta through alpha's path
    assert api.client.get("/api/v1/projects/alpha/items/only-in-beta", headers=api.admin).status_code == 404
    api.set_item("beta", "only-in-beta", status="escalated", conflict_kind="human_vs_human", votes_needed=0)
    r = api.client.post("/api/v1/projects/alpha/review/only-in-beta/resolve", json={"label": "positive"}, headers=rev)
    assert r.status_code == 404
    # a lease taken in beta, answered through alpha
    lease = api.task("beta", both)["lease_token"]
    r = api.vote("alpha", both, lease)
    assert r.status_code == 404
    assert "lease token" in r.json()["detail"]
    assert api.client.post(f"/api/v1/projects/alpha/tasks/{lease}/release", headers=both).status_code == 404
    # a batch of beta through alpha's path
    batch = api.client.post("/api/v1/projects/beta/batches", json={"items": [{"id": "bb", "text": "x"}]},
                            headers=api.admin).json()["batch_id"]
    assert api.client.get(f"/api/v1/projects/alpha/batches/{batch}", headers=api.admin).status_code == 404
    # an alert of beta acknowledged through alpha's path

    with session_scope(api.engine) as session:
        alert = Alert(project_id=api.db_item("beta", "beta-2").project_id, kind="drift", message="m")
        session.add(alert)
        session.flush()
        alert_id = alert.id
    assert api.client.post(f"/api/v1/projects/alpha/alerts/{alert_id}/ack", headers=api.admin).status_code == 404
    assert api.client.post(f"/api/v1/projects/beta/alerts/{alert_id}/ack", headers=api.admin).status_code == 200
    # and nothing was recorded
    assert api.vote_rows() == 0
    assert api.vote("beta", both, lease).status_code == 201


def test_a_token_made_with_the_cli_works_with_the_api(api: Api, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI and the API share the service functions: an annotator token from
    ``llmlabel token create --project p`` is a member of p through the API."""
    api.project("p")
    api.items("p", reviews(2))
    with pytest.raises(SystemExit) as done:
        main(["token", "create", "--role", "annotator", "--name", "cli-ann", "--project", "p", "--db", db_url])
    assert done.value.code == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    r = api.next("p", bearer(token))
    assert r.status_code == 200, f"{r.status_code} {r.text}: the CLI's --project did not make the account a member of p"
