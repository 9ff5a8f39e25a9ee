"""Monitoring: bands from history, departures, concept drift, stored alerts, webhook, metrics."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from llmlabel.errors import InputError
from llmlabel.quality import monitoring as mon
from llmlabel.quality.monitoring import Observation, Series
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Alert, Gold, Vote, Voter, utcnow

from .conftest import CLASSES, Seeded, seed_project


def series(values: list[float], ns: list[float], kind: str = "proportion", direction: str = "low",
           metric: str = "gold_accuracy", subject: str = "llm:gpt", floor: float | None = None) -> Series:
    return Series(metric, subject, kind, direction, [Observation(v, n) for v, n in zip(values, ns, strict=True)], floor)  # type: ignore[arg-type]


def test_band_of_a_proportion_adds_the_binomial_noise_of_the_new_window() -> None:
    history = [Observation(v, 100) for v in (0.90, 0.92, 0.88, 0.90, 0.91)]
    big = mon.expected_band(history, 400, "proportion")
    small = mon.expected_band(history, 5, "proportion")
    assert big is not None and small is not None
    assert big.mean == pytest.approx(0.902)
    assert small.low < big.low  # five answers cannot tell 0.75 from 0.9
    assert mon.expected_band(history[:3], 100, "proportion") is None  # not enough history


def test_a_drop_far_outside_the_band_is_found_and_a_small_wobble_is_not() -> None:
    hist = [0.9, 0.91, 0.89, 0.9, 0.92, 0.9, 0.88]
    drop = series([*hist, 0.55], [60] * 8)
    wobble = series([*hist, 0.86], [60] * 8)
    rise_of_a_low_metric = series([*hist, 0.99], [60] * 8)
    found = mon.find_departures([drop, wobble, rise_of_a_low_metric])
    assert [f.subject for f in found] == ["llm:gpt"] and found[0].value == 0.55
    assert "under its expected band" in found[0].message
    slow = series([10, 11, 9, 10, 12, 10, 11, 60], [1] * 8, kind="value", direction="both", metric="time_per_task",
                  subject="human")
    assert [f.kind for f in mon.find_departures([slow])] == ["time_per_task"]


def test_a_fixed_floor_catches_a_voter_without_history() -> None:
    new_voter = series([float("nan")] * 7 + [0.3], [0] * 7 + [20], floor=0.7)
    [f] = mon.find_departures([new_voter])
    assert f.low == 0.7 and "bar 0.70" in f.message
    few = series([float("nan")] * 7 + [0.0], [0] * 7 + [3], floor=0.7)
    assert mon.find_departures([few]) == []  # three answers are not evidence


def test_concept_drift_needs_many_voters_falling_together() -> None:
    def voter(name: str, last: float) -> Series:
        return series([0.9] * 7 + [last], [20] * 8, subject=name)

    together = [voter("a", 0.5), voter("b", 0.55), voter("c", 0.5), voter("d", 0.9)]
    drift = mon.concept_drift(together)
    assert drift is not None and drift.kind == "concept_drift" and "3 of 4" in drift.message
    assert mon.concept_drift([voter("a", 0.5), voter("b", 0.9), voter("c", 0.9), voter("d", 0.9)]) is None


def _spoil_recent_gold(s: Seeded, names: list[str], since: timedelta) -> None:
    """Make these voters' recent votes on gold wrong (as if a provider swapped the model)."""
    cutoff = utcnow() - since
    with session_scope(s.engine) as session:
        gold = dict(session.execute(select(Gold.item_id, Gold.label)).all())
        rows = session.execute(
            select(Vote.id, Vote.item_id).join(Voter, Voter.id == Vote.voter_id)
            .where(Voter.name.in_(names), Vote.created_at >= cutoff, Vote.item_id.in_(list(gold)))  # type: ignore[attr-defined]
        ).all()
        for vote_id, item_id in rows:
            wrong = CLASSES[(CLASSES.index(gold[item_id]) + 1) % 3]
            session.execute(update(Vote).where(Vote.id == vote_id).values(label=wrong))  # type: ignore[arg-type]


def test_a_labeler_that_silently_got_worse_raises_one_alert(seeded: Seeded) -> None:
    _spoil_recent_gold(seeded, ["llm0"], timedelta(hours=23))
    with session_scope(seeded.engine) as session:
        new = mon.check(session, project=seeded.project, config=seeded.config)
    subjects = {(a.kind, a.subject) for a in new}
    assert ("gold_accuracy", "llm:llm0") in subjects
    assert ("gold_accuracy", "llm:llm1") not in subjects
    with session_scope(seeded.engine) as session:
        assert mon.check(session, project=seeded.project, config=seeded.config) == []  # once per window
        listed = mon.list_alerts(session, project=seeded.project)
        alert = next(a for a in listed if a.subject == "llm:llm0")
        assert alert.value is not None and alert.value < 0.2 and alert.low is not None
        mon.acknowledge(session, project=seeded.project, alert_id=alert.id)  # type: ignore[arg-type]
    with session_scope(seeded.engine) as session:
        assert alert.id not in {a.id for a in mon.list_alerts(session, project=seeded.project)}
        assert alert.id in {a.id for a in mon.list_alerts(session, project=seeded.project, include_acknowledged=True)}


def test_many_voters_falling_together_is_concept_drift(engine: Engine, tmp_path: Path) -> None:
    s = seed_project(engine, tmp_path, n_items=400, humans=4, llms=2, gold_every=2, refit=False)
    _spoil_recent_gold(s, ["h0", "h1", "h2", "h3", "llm0", "llm1"], timedelta(days=1.9))
    with session_scope(engine) as session:
        new = mon.check(session, project=s.project, config=s.config, window=timedelta(days=2), n_windows=4)
        stored = session.execute(select(Alert.kind).where(Alert.project_id == s.project.id)).scalars().all()
    assert "concept_drift" in {a.kind for a in new} and "concept_drift" in stored


class _Hook(BaseHTTPRequestHandler):
    bodies: list[dict[str, object]] = []
    statuses: list[int] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).bodies.append(json.loads(body))
        self.send_response(type(self).statuses.pop(0) if type(self).statuses else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    _Hook.bodies, _Hook.statuses = [], [503]
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    server.shutdown()


def test_webhook_is_retried_and_private_addresses_are_refused(hook: str) -> None:
    alert = Alert(id=1, project_id=1, kind="gold_accuracy", subject="llm:gpt", value=0.4, low=0.7, message="fell",
                  created_at=utcnow())
    with pytest.raises(InputError, match="private, loopback"):
        mon.post_webhook(hook, project="p", alerts=[alert])
    assert mon.post_webhook(hook, project="p", alerts=[alert], allow_private=True, backoff_seconds=0.01) == 200
    assert len(_Hook.bodies) == 2  # a 503, then accepted
    assert _Hook.bodies[-1]["project"] == "p" and _Hook.bodies[-1]["alerts"][0]["subject"] == "llm:gpt"  # type: ignore[index]
    _Hook.statuses = [400]
    with pytest.raises(InputError, match="did not accept"):
        mon.post_webhook(hook, project="p", alerts=[alert], allow_private=True, backoff_seconds=0.01)
    assert len(_Hook.bodies) == 3  # a 400 is not retried


def test_prometheus_text_has_counts_and_no_item_data(seeded: Seeded) -> None:
    with session_scope(seeded.engine) as session:
        text = mon.prometheus_text(session)
    lines = text.splitlines()
    assert "# TYPE llmlabel_items gauge" in lines
    final = next(line for line in lines if line.startswith('llmlabel_items{project="quality",status="final"}'))
    assert float(final.split()[-1]) > 0
    assert any(line.startswith('llmlabel_votes_total{kind="human",project="quality"}') or
               line.startswith('llmlabel_votes_total{project="quality",kind="human"}') for line in lines)
    assert "i00001" not in text and "positive" not in text
    with session_scope(seeded.engine) as session:
        assert "quality" not in mon.prometheus_text(session, project_ids=[])
