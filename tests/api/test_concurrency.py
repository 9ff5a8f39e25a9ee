"""Many annotators at once through a real uvicorn server on loopback, then the invariants checked
in the database: no lost vote, no duplicated vote, no item leased to more annotators than the
votes it needed, no 5xx."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.engine import Engine

from llmlabel.store.tables import Lease, Vote

from .conftest import Api, LiveServer, reviews

ANNOTATORS = 16
ITEMS = 40
MIN_HUMAN_VOTES = 1
MAX_VOTES = 3
LABELS = ("positive", "negative", "neutral")


@dataclass
class Tally:
    created: list[tuple[int, str, str]] = field(default_factory=list)  # vote id, item, annotator
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, r: httpx.Response, what: str) -> None:
        with self.lock:
            self.statuses[r.status_code] += 1
            if r.status_code >= 500:
                self.errors.append(f"{what}: {r.status_code} {r.text[:300]}")


def annotate(url: str, token: str, name: str, tally: Tally, deadline: float) -> None:
    """Take tasks until there are none: mostly answer (some twice, as a retry would), sometimes hand back."""
    rng = random.Random(name)
    headers = {"Authorization": f"Bearer {token}"}
    idle = 0
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        while time.monotonic() < deadline:
            r = client.get("/api/v1/projects/p/tasks/next")
            tally.saw(r, "next")
            if r.status_code == 204 and idle < 10:  # the open items may all be taken for now
                idle += 1
                time.sleep(0.2)
                continue
            if r.status_code != 200:
                return
            idle = 0
            task = r.json()
            if rng.random() < 0.1:
                tally.saw(client.post(f"/api/v1/projects/p/tasks/{task['lease_token']}/release"), "release")
                continue
            truth = LABELS[int(task["item_id"][1:]) % 3]
            label = truth if rng.random() < 0.85 else rng.choice(LABELS)
            key = uuid.uuid4().hex
            path = f"/api/v1/projects/p/tasks/{task['lease_token']}/vote"
            first = client.post(path, json={"label": label}, headers={"Idempotency-Key": key})
            tally.saw(first, "vote")
            if first.status_code == 201:
                with tally.lock:
                    tally.created.append((first.json()["vote_id"], task["item_id"], name))
                if rng.random() < 0.2:  # a client retry: the same answer, the same key
                    again = client.post(path, json={"label": label}, headers={"Idempotency-Key": key})
                    tally.saw(again, "replay")
                    assert again.json() == first.json()


def check_invariants(engine: Engine, tally: Tally) -> dict[str, Any]:
    with engine.connect() as conn:
        votes = conn.execute(select(Vote.id, Vote.item_id, Vote.voter_id, Vote.created_at)).all()
        leases = conn.execute(select(Lease.item_id, Lease.voter_id, Lease.state, Lease.is_human, Lease.is_gold,
                                     Lease.created_at, Lease.expires_at)).all()
    stored = {v.id for v in votes}
    answered = [vote_id for vote_id, _, _ in tally.created]
    assert len(answered) == len(set(answered)), "a 201 with created=true was returned twice for one vote"
    assert set(answered) == stored, f"lost votes: {set(answered) - stored}; unexplained rows: {stored - set(answered)}"
    pairs = Counter((v.item_id, v.voter_id) for v in votes)
    assert max(pairs.values()) == 1, "duplicated votes"
    per_item = Counter(v.item_id for v in votes)
    assert max(per_item.values()) <= MAX_VOTES, f"an item got more votes than max_votes: {per_item.most_common(3)}"
    # over-assignment, checked at each lease's start: the human leases live then, plus this one,
    # never exceed the votes still needed then (at most max(1, min_human_votes - votes so far))
    voted_at = {(v.item_id, v.voter_id): v.created_at for v in votes}
    spans: dict[int, list[tuple[datetime, datetime | None]]] = defaultdict(list)
    for lease in leases:
        assert lease.is_human and not lease.is_gold
        end = voted_at.get((lease.item_id, lease.voter_id)) if lease.state == "done" else (
            lease.expires_at if lease.state == "expired" else None)
        spans[lease.item_id].append((lease.created_at, end))
    worst = 0
    for item_id, item_spans in spans.items():
        item_votes = sorted(t for (i, _), t in voted_at.items() if i == item_id)
        for start, _ in item_spans:
            live = sum(1 for s, e in item_spans if s < start and (e is None or e > start))
            allowed = max(1, MIN_HUMAN_VOTES - sum(1 for t in item_votes if t < start))
            worst = max(worst, live + 1 - allowed)
    assert worst <= 0, f"an item was leased to {worst} more annotator(s) than it needed"
    assert not any(lease.state == "active" for lease in leases), "every task was answered or handed back"
    return {"votes": len(votes), "leases": len(leases), "items voted": len(per_item)}


def test_annotators_hammering_a_real_server(api: Api) -> None:
    api.project("p", min_human_votes=MIN_HUMAN_VOTES, max_votes=MAX_VOTES, target_confidence=0.9)
    api.items("p", reviews(ITEMS))
    tokens = [api.token(f"ann{i:02d}", "annotator", ["p"])["Authorization"].split()[1] for i in range(ANNOTATORS)]
    tally = Tally()
    with LiveServer(api.engine) as server:
        deadline = time.monotonic() + 40
        threads = [threading.Thread(target=annotate, args=(server.url, t, f"ann{i:02d}", tally, deadline))
                   for i, t in enumerate(tokens)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not tally.errors, "\n".join(tally.errors[:5])
    assert set(tally.statuses) <= {200, 201, 204}, tally.statuses
    assert time.monotonic() < deadline, "the annotators did not run out of work in time"
    summary = check_invariants(api.engine, tally)
    assert summary["votes"] >= ITEMS * MIN_HUMAN_VOTES * 0.8, summary
    open_items = api.client.get("/api/v1/projects/p", headers=api.admin).json()["by_status"].get("open", 0)
    assert open_items == 0, "annotators stopped while items still needed votes"
