"""The web pages in headless Chromium: a real uvicorn server on loopback over a seeded SQLite
file, driven by Playwright with the system's Chromium (never a downloaded browser).

One server and one browser for the whole folder; each project below belongs to one test, so
the tests do not depend on each other's order.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy.engine import Engine
from sqlmodel import select

from llmlabel.access import create_token
from llmlabel.api import ApiSettings, create_app
from llmlabel.config import parse_config
from llmlabel.ingest import import_items
from llmlabel.projects import get_or_create_voter, sync_project
from llmlabel.store.db import open_engine, session_scope
from llmlabel.store.tables import Item, Project, Vote

SENTIMENT = ["positive", "negative", "neutral"]
XSS = "<script>alert(1)</script>"


def config(name: str, classes: list[str] | None = None, **policy: Any) -> dict[str, Any]:
    return {
        "name": name,
        "instructions": {"guidelines": "Label the sentiment of the review as the writer meant it."},
        "labels": {"type": "single", "classes": {c: f"The review is {c}." for c in classes or SENTIMENT}},
        "item_template": "{{ text }}",
        "policy": {"qualification_tasks": 0, "gold_rate": 0.0, **policy},
    }


REVIEWS = [
    "Arrived quickly and works exactly as described.", "Broke after two days; the seller never answered.",
    "It is a phone case. It holds the phone.", "Best purchase this year, my kids love it!",
    "The colour is nothing like the photos.", "Does the job, nothing special.",
    "Battery lasts a full week, impressive.", "Returned it: too loud and the app keeps crashing.",
    "Okay for the price.", "Would buy again without a second thought.",
    "Smells of plastic for days.", "Fine.",
]


@dataclass
class Site:
    url: str
    engine: Engine
    tokens: dict[str, str]
    shots: Path

    def votes(self, project: str, voter: str) -> dict[str, Any]:
        """item id → label of ``voter``'s votes in ``project``."""
        from llmlabel.store.tables import Voter

        with session_scope(self.engine) as s:
            rows = s.exec(
                select(Item.external_id, Vote.label, Vote.unsure, Vote.comment)
                .join(Vote, Vote.item_id == Item.id).join(Voter, Voter.id == Vote.voter_id)  # type: ignore[arg-type]
                .join(Project, Project.id == Item.project_id)  # type: ignore[arg-type]
                .where(Project.name == project, Voter.name == voter)
            ).all()
        return {r[0]: r for r in rows}


def _project(engine: Engine, tmp: Path, cfg: dict[str, Any], rows: list[dict[str, Any]], gold_field: str | None = None) -> None:
    parsed = parse_config(cfg)
    with session_scope(engine) as s:
        project = sync_project(s, config=parsed)
    path = tmp / f"{cfg['name']}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    import_items(engine, project=project, config=parsed, path=path, gold_field=gold_field)


def _vote(s: Any, project: Project, item: Item, voter: str, kind: str, label: Any, **extra: Any) -> None:
    v = get_or_create_voter(s, project_id=project.id, name=voter, kind=kind)  # type: ignore[arg-type]
    s.flush()
    s.add(Vote(project_id=project.id, item_id=item.id, voter_id=v.id, label=label, **extra))  # type: ignore[arg-type]


def _escalate(engine: Engine, project_name: str, external_id: str) -> None:
    """An item the engine escalated: an LLM and two annotators who all disagree."""
    with session_scope(engine) as s:
        project = s.exec(select(Project).where(Project.name == project_name)).one()
        item = s.exec(select(Item).where(Item.project_id == project.id, Item.external_id == external_id)).one()
        _vote(s, project, item, "gpt-test", "llm", "positive", confidence=0.81,
              rationale=f"Upbeat wording. {XSS}", prompt_version="p1")
        _vote(s, project, item, "hana", "human", "negative", comment="sarcastic, I think")
        _vote(s, project, item, "ivo", "human", "neutral", unsure=True)
        item.status, item.conflict_kind, item.vote_count = "escalated", "llm_vs_human", 3
        item.posterior = {"positive": 0.4, "negative": 0.35, "neutral": 0.25}
        s.add(item)


def _seed(engine: Engine, tmp: Path) -> dict[str, str]:
    items = [{"id": f"r{i:02d}", "text": t} for i, t in enumerate(REVIEWS, 1)]
    _project(engine, tmp, config("reviews", min_human_votes=2, target_confidence=0.99), items)
    _project(engine, tmp, config("quals", ["yes", "no"], qualification_tasks=3),
             [{"id": f"q{i}", "text": f"Is sentence {i} a question?", "gold": "yes" if i % 2 else "no"} for i in range(1, 5)],
             gold_field="gold")
    xss_cfg = config("xss", ["ok", "bad"])
    xss_cfg["instructions"]["guidelines"] = "Flag markup. <img src=x onerror=alert(2)>"
    _project(engine, tmp, xss_cfg, [{"id": "x1", "text": f"{XSS} & <b>bold</b>"}])
    _project(engine, tmp, config("triage"), [{"id": f"t{i}", "text": REVIEWS[i]} for i in range(3)])
    _project(engine, tmp, config("blind", blind_review=True), [{"id": "b1", "text": "Not bad. Not good either?"}])
    _project(engine, tmp, config("other"), [{"id": "o1", "text": "Another team's item."}])
    taxonomy = {"name": "shop", "item_template": "{{ title }}", "policy": {"qualification_tasks": 0, "gold_rate": 0.0},
                "labels": {"type": "taxonomy", "tree": {"Electronics": {"Phones": ["Smartphones", "Feature phones"],
                                                                         "Computers": ["Laptops", "Tablets"]},
                                                         "Home": {"Kitchen": ["Cookware"]}}}}
    _project(engine, tmp, taxonomy, [{"id": "s1", "title": "Stainless steel frying pan, 28 cm"}])
    with session_scope(engine) as s:
        reviews = s.exec(select(Project).where(Project.name == "reviews")).one()
        for item in s.exec(select(Item).where(Item.project_id == reviews.id)).all():
            _vote(s, reviews, item, "gpt-test", "llm", "positive", confidence=0.7, rationale=f"LLM-SAYS-{item.external_id}")
    _escalate(engine, "triage", "t1")
    _escalate(engine, "blind", "b1")
    with session_scope(engine) as s:
        p = {n: s.exec(select(Project).where(Project.name == n)).one()
             for n in ("reviews", "quals", "xss", "triage", "blind", "other", "shop")}
        tokens = {
            "ada": create_token(s, name="ada", role="admin"),
            "rita": create_token(s, name="rita", role="reviewer", projects=[p["triage"], p["blind"], p["reviews"]]),
            "ann": create_token(s, name="ann", role="annotator", projects=[p["reviews"], p["quals"], p["xss"], p["shop"]]),
            "cara": create_token(s, name="cara", role="annotator", projects=[p["reviews"]]),
            "gus": create_token(s, name="gus", role="annotator", projects=[p["other"]]),
        }
        gated = get_or_create_voter(s, project_id=p["other"].id, name="gus", kind="human", status="gated")  # type: ignore[arg-type]
        s.add(gated)
    return tokens


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory, _sqlite_at_head: Path) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("web")
    db = tmp / "web.db"
    shutil.copyfile(_sqlite_at_head, db)
    engine = open_engine(f"sqlite:///{db}")
    tokens = _seed(engine, tmp)
    app = create_app(engine, ApiSettings(callback_interval_seconds=0))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the web server did not start")
        time.sleep(0.02)
    shots = Path(os.environ.get("LLMLABEL_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        yield Site(f"http://127.0.0.1:{port}", engine, tokens, shots)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()


@pytest.fixture(scope="module")
def browser(chromium: Any) -> Any:
    if chromium is None:
        pytest.skip("the Python 'playwright' package is not installed")
    return chromium


@pytest.fixture
def page(browser: Any, site: Site) -> Iterator[Any]:
    context = browser.new_context(base_url=site.url, viewport={"width": 1180, "height": 860})
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    dialogs: list[str] = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.dialogs = dialogs  # every dialog that fired: an XSS would show here
    try:
        yield pg
    finally:
        context.close()


def login(page: Any, site: Site, who: str) -> None:
    page.goto("/ui/login")
    page.fill("#token", site.tokens[who])
    with page.expect_navigation():
        page.click("button[type=submit].primary")
    assert page.url.endswith("/ui/"), page.url
