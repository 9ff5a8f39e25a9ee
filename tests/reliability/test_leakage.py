"""Nothing an annotator can fetch may carry a gold label or another voter's vote: not the task
API, not the annotate page, not the project list, for gold tasks and ordinary ones alike."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from sqlmodel import select

from llmlabel.access import create_token
from llmlabel.api import ApiSettings, create_app
from llmlabel.api.embedded import EmbeddedServer
from llmlabel.config import parse_config
from llmlabel.ingest import import_items
from llmlabel.projects import get_or_create_voter, sync_project
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Item
from llmlabel.votes import VoteInput, record_vote

TASK_KEYS = {"lease_token", "item_id", "text", "fields", "choices", "instructions", "expires_at", "suggestions"}
MARK = "RATIONALE-7f3a"


def _project(engine, tmp_path: Path):
    config = parse_config({
        "name": "leak",
        "labels": {"type": "single", "classes": ["spam", "ham"]},
        "item_template": "{{ text }}",
        "policy": {"gold_rate": 0.5, "qualification_tasks": 3, "min_human_votes": 3, "max_votes": 9},
    })
    rows = tmp_path / "items.jsonl"
    rows.write_text("".join(
        json.dumps({"id": f"m{i}", "text": f"message {i}", "secret_label": ("spam" if i % 2 else "ham") if i < 8 else ""}) + "\n"
        for i in range(24)
    ))
    with session_scope(engine) as s:
        project = sync_project(s, config=config)
    import_items(engine, project=project, config=config, path=rows, gold_field="secret_label")
    with session_scope(engine) as s:
        llm = get_or_create_voter(s, project_id=project.id, name="gpt", kind="llm")
        other = get_or_create_voter(s, project_id=project.id, name="other-annotator", kind="human")
        for item in s.exec(select(Item).where(Item.project_id == project.id)).all():
            for voter in (llm, other):
                record_vote(s, project_id=project.id, item_id=item.id, voter_id=voter.id,
                            vote=VoteInput(label="spam", confidence=0.93, rationale=f"{MARK} {voter.name}"))
        token = create_token(s, name="annotator", role="annotator", projects=[project])
    return config, token


def test_annotators_never_see_gold_or_other_votes(engine, tmp_path: Path) -> None:
    config, token = _project(engine, tmp_path)
    app = create_app(engine, ApiSettings(callback_interval_seconds=0))
    seen_gold_task = seen_plain_task = 0
    with EmbeddedServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        auth = {"Authorization": f"Bearer {token}"}
        listing = client.get("/api/v1/projects", headers=auth)
        assert MARK not in listing.text
        for _ in range(40):
            r = client.get(f"/api/v1/projects/{config.name}/tasks/next", headers=auth)
            if r.status_code == 204:
                break
            assert r.status_code == 200, r.text
            task = r.json()
            assert set(task) == TASK_KEYS, f"unexpected fields in a task: {set(task) ^ TASK_KEYS}"
            assert task["suggestions"] == []
            assert "secret_label" not in task["fields"] and set(task["fields"]) == {"text"}
            shown = r.text.replace(task["lease_token"], "")  # a random token may spell "gpt" by chance
            assert MARK not in shown and "gpt" not in shown and "other-annotator" not in shown
            number = int(task["item_id"][1:])
            seen_gold_task += number < 8
            seen_plain_task += number >= 8
            answer = "spam" if number % 2 else "ham"  # a good annotator: passes qualification
            client.post(f"/api/v1/projects/{config.name}/tasks/{task['lease_token']}/vote",
                        json={"label": answer}, headers=auth).raise_for_status()

        # the browser page an annotator works in
        login = client.get("/ui/login")
        csrf = client.cookies.get("llmlabel_token_login") or ""
        page = client.post("/ui/login", data={"token": token, "csrf": csrf}, follow_redirects=True)
        html = client.get(f"/ui/p/{config.name}/annotate").text
        assert login.status_code == 200 and page.status_code == 200
        assert MARK not in html and "other-annotator" not in html and "secret_label" not in html
    assert seen_gold_task >= 3, "qualification should have served gold tasks"
    assert seen_plain_task >= 1, "ordinary tasks should follow qualification"
