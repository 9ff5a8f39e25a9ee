"""50 annotators on one project through a real HTTP server: some replay their submissions,
some abandon their leases. Nothing may be lost, duplicated or over-assigned, and nothing
may answer 5xx, on SQLite and on PostgreSQL."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from sqlalchemy import func, select, text

from llmlabel.access import create_token
from llmlabel.api import ApiSettings, create_app
from llmlabel.api.embedded import EmbeddedServer
from llmlabel.config import parse_config
from llmlabel.projects import sync_project
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Gold, Item, Vote, Voter

ANNOTATORS = 50
SECONDS = 12.0
MIN_HUMANS = 2
MAX_VOTES = 4


@dataclass
class Tally:
    acked: dict[int, tuple[str, str]] = field(default_factory=dict)  # vote id → (annotator, item)
    statuses: Counter[int] = field(default_factory=Counter)
    replays_mismatched: int = 0
    abandoned: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _seed(engine, n_items: int = 400) -> tuple[str, list[str]]:
    config = parse_config({
        "name": "load",
        "labels": {"type": "single", "classes": ["yes", "no"]},
        # the annotators answer at random: a low quality bar keeps most of them working (a load
        # test, not a gating test), while the unlucky few still get gated mid-run
        "policy": {"target_confidence": 0.99, "min_human_votes": MIN_HUMANS, "max_votes": MAX_VOTES,
                   "qualification_tasks": 0, "gold_rate": 0.05, "lease_seconds": 30, "quality_bar": 0.2},
    })
    with session_scope(engine) as s:
        project = sync_project(s, config=config)
        for i in range(n_items):
            item = Item(project_id=project.id, external_id=f"i{i}", fields={"text": f"item {i}"}, content_hash=str(i))
            s.add(item)
            s.flush()
            if i < 20:
                s.add(Gold(project_id=project.id, item_id=item.id, label="yes" if i % 2 else "no"))
        tokens = [create_token(s, name=f"ann{k}", role="annotator", projects=[project]) for k in range(ANNOTATORS)]
    return config.name, tokens


def _annotator(base: str, project: str, token: str, seed: int, deadline: float, tally: Tally) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        while time.monotonic() < deadline:
            r = client.get(f"/api/v1/projects/{project}/tasks/next")
            with tally.lock:
                tally.statuses[r.status_code] += 1
            if r.status_code == 204:
                time.sleep(0.05)
                continue
            if r.status_code != 200:
                continue
            task = r.json()
            if rng.random() < 0.05:  # walks away: the lease is left to expire
                with tally.lock:
                    tally.abandoned += 1
                continue
            key = f"{token[-8:]}-{task['lease_token']}"
            body = {"label": rng.choice(["yes", "no"])}
            url = f"/api/v1/projects/{project}/tasks/{task['lease_token']}/vote"
            first = client.post(url, json=body, headers={"Idempotency-Key": key})
            with tally.lock:
                tally.statuses[first.status_code] += 1
                if first.status_code == 201:
                    tally.acked[first.json()["vote_id"]] = (token, task["item_id"])
            if rng.random() < 0.10:  # the client did not trust the first answer and sends it again
                again = client.post(url, json=body, headers={"Idempotency-Key": key})
                with tally.lock:
                    tally.statuses[again.status_code] += 1
                    if again.status_code != first.status_code or again.json() != first.json():
                        tally.replays_mismatched += 1


def _sampler(engine, stop: threading.Event, worst: list[int]) -> None:
    """Live human leases per item, sampled while the load runs (never above what an item needs)."""
    q = text(
        "SELECT COALESCE(MAX(n), 0) FROM (SELECT item_id, COUNT(*) AS n FROM leases "
        "WHERE state = 'active' AND is_human AND is_gold = :f AND expires_at > :now GROUP BY item_id) AS t"
    )
    from llmlabel.store.tables import utcnow

    while not stop.is_set():
        with engine.connect() as conn:
            worst.append(int(conn.execute(q, {"now": utcnow(), "f": False}).scalar_one()))
            conn.rollback()
        time.sleep(0.2)


def test_fifty_annotators_lose_nothing_duplicate_nothing_overassign_nothing(engine) -> None:
    project, tokens = _seed(engine)
    tally = Tally()
    app = create_app(engine, ApiSettings(callback_interval_seconds=0))
    stop, worst = threading.Event(), []
    with EmbeddedServer(app) as server:
        sampler = threading.Thread(target=_sampler, args=(engine, stop, worst))
        sampler.start()
        deadline = time.monotonic() + SECONDS
        threads = [threading.Thread(target=_annotator, args=(server.url, project, t, k, deadline, tally))
                   for k, t in enumerate(tokens)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        sampler.join()

    with engine.connect() as conn:
        stored = {r.id: (r.voter_id, r.item_id) for r in conn.execute(select(Vote.id, Vote.voter_id, Vote.item_id))}
        pairs = conn.execute(select(func.count()).select_from(
            select(Vote.item_id, Vote.voter_id).distinct().subquery())).scalar_one()
        # the budget counts the votes consensus counts: a gated annotator's votes leave it and
        # their items reopen for others, so those votes are over any budget by design
        per_item = conn.execute(
            select(Vote.item_id, func.count())
            .join(Voter, Voter.id == Vote.voter_id)
            .where(Vote.item_id.not_in(select(Gold.item_id)), Voter.status != "gated")
            .group_by(Vote.item_id)
        ).all()

    print(f"\nload: {len(tally.acked)} votes acknowledged, {tally.abandoned} leases abandoned, "
          f"statuses {dict(tally.statuses)}, max live human leases per item {max(worst)}")
    assert not [s for s in tally.statuses if s >= 500], tally.statuses
    assert len(tally.acked) > 100, f"too little load to mean anything: {tally.statuses}"
    lost = [v for v in tally.acked if v not in stored]
    assert lost == [], f"acknowledged votes missing from the database: {lost[:5]}"
    assert len(stored) == len(tally.acked), "votes stored that no client was told about"
    assert pairs == len(stored), "an annotator voted twice on one item"
    assert tally.replays_mismatched == 0, "a replayed submission got a different answer"
    assert max(worst) <= MIN_HUMANS, f"an item was leased to {max(worst)} annotators at once"
    # Leases granted just before the budget ran out may still land: at most MIN_HUMANS - 1 more.
    assert per_item, f"no votes outside gated annotators: the budget check would prove nothing ({tally.statuses})"
    assert max(n for _, n in per_item) <= MAX_VOTES + MIN_HUMANS - 1, "an item got more votes than its budget"
