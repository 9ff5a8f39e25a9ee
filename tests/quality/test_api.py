"""The quality routes over the real app and database: alerts, agreement, report, /metrics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from llmlabel.access import create_token
from llmlabel.api import create_app
from llmlabel.config import parse_config
from llmlabel.projects import sync_project
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Alert

from .conftest import Seeded, config_dict


@pytest.fixture
def client(seeded: Seeded) -> Iterator[TestClient]:
    with TestClient(create_app(seeded.engine)) as c:
        yield c


def _bearer(seeded: Seeded, name: str, role: str, projects: tuple[str, ...] = ("quality",)) -> dict[str, str]:
    from llmlabel.projects import get_project

    with session_scope(seeded.engine) as s:
        token = create_token(s, name=name, role=role, projects=[get_project(s, name=p) for p in projects])
    return {"Authorization": f"Bearer {token}"}


def test_alerts_are_listed_checked_and_acknowledged(seeded: Seeded, client: TestClient) -> None:
    admin = _bearer(seeded, "root", "admin")
    reviewer = _bearer(seeded, "rev", "reviewer")
    with session_scope(seeded.engine) as s:
        s.add(Alert(project_id=seeded.project.id, kind="throughput", subject="human", value=3.0, low=40.0,  # type: ignore[arg-type]
                    high=90.0, message="votes per window of human is 3"))
    r = client.get("/api/v1/projects/quality/alerts", headers=reviewer)
    assert r.status_code == 200, r.text
    [alert] = [a for a in r.json() if a["kind"] == "throughput"]
    assert alert["subject"] == "human" and alert["acknowledged_at"] is None
    assert client.post(f"/api/v1/projects/quality/alerts/{alert['id']}/ack", headers=reviewer).status_code == 403
    r = client.post(f"/api/v1/projects/quality/alerts/{alert['id']}/ack", headers=admin)
    assert r.status_code == 200 and r.json()["acknowledged_at"]
    assert alert["id"] not in [a["id"] for a in client.get("/api/v1/projects/quality/alerts", headers=admin).json()]
    assert alert["id"] in [a["id"] for a in client.get("/api/v1/projects/quality/alerts?all=true", headers=admin).json()]
    r = client.post("/api/v1/projects/quality/alerts/check", headers=admin)
    assert r.status_code == 200 and isinstance(r.json(), list)
    assert client.post("/api/v1/projects/quality/alerts/999999/ack", headers=admin).status_code == 404


def test_outsiders_do_not_see_a_projects_quality(seeded: Seeded, client: TestClient) -> None:
    with session_scope(seeded.engine) as s:
        sync_project(s, config=parse_config(config_dict("other")))
    stranger = _bearer(seeded, "rev2", "reviewer", projects=("other",))
    annotator = _bearer(seeded, "ann", "annotator")
    for path in ("alerts", "agreement", "report"):
        assert client.get(f"/api/v1/projects/quality/{path}", headers=stranger).status_code == 404
        assert client.get(f"/api/v1/projects/quality/{path}", headers=annotator).status_code == 403


def test_agreement_and_report(seeded: Seeded, client: TestClient) -> None:
    admin = _bearer(seeded, "root", "admin")
    r = client.get("/api/v1/projects/quality/agreement?n_boot=100", headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0 < body["human_alpha"]["estimate"] < 1 and body["human_alpha"]["n"] == 240
    assert {v["name"] for v in body["voters"]} >= {"h0", "llm0"}
    assert next(v for v in body["voters"] if v["name"] == "llm0")["vs_human_majority"]["n"] > 0
    r = client.get("/api/v1/projects/quality/report", headers=admin)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.text.count("<svg") >= 6 and "default-src 'none'" in r.headers["content-security-policy"]


def test_metrics_need_a_staff_token_and_show_only_visible_projects(seeded: Seeded, client: TestClient) -> None:
    with session_scope(seeded.engine) as s:
        sync_project(s, config=parse_config(config_dict("other")))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=_bearer(seeded, "ann", "annotator")).status_code == 403
    r = client.get("/metrics", headers=_bearer(seeded, "root", "admin"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'llmlabel_items{project="quality",status="final"}' in r.text
    assert 'llmlabel_llm_cost_usd_total{project="quality"}' in r.text
    other_only = client.get("/metrics", headers=_bearer(seeded, "rev", "reviewer", projects=("other",))).text
    assert 'project="quality"' not in other_only
