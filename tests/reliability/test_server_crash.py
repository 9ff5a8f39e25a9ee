"""kill -9 the API server while annotators are submitting, start it again, and let the clients
retry with their Idempotency-Keys: every acknowledged vote is stored once, none twice."""

from __future__ import annotations

import functools
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import func, select

from llmlabel.access import create_token
from llmlabel.config import parse_config
from llmlabel.projects import sync_project
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Item, Vote

ANNOTATORS = 8
CRASHES = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:  # a file, not a pipe: an unread pipe would fill and stall the server
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmlabel", "serve", "--db", url, "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=fh, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()[-2000:]}")
    proc.kill()
    raise AssertionError("server did not come up in 90 s")


def _until_answered(fn):  # type: ignore[no-untyped-def]
    """Retry a request across a dead server until it answers at all."""
    while True:
        try:
            return fn()
        except httpx.TransportError:
            time.sleep(0.1)


def test_votes_survive_kill_9_of_the_server(engine, db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    config = parse_config({"name": "crash", "labels": {"type": "single", "classes": ["a", "b"]},
                           "policy": {"qualification_tasks": 0, "gold_rate": 0.0, "min_human_votes": 2,
                                      "target_confidence": 0.99, "max_votes": 3}})
    with session_scope(engine) as s:
        project = sync_project(s, config=config)
        for i in range(300):
            s.add(Item(project_id=project.id, external_id=f"c{i}", fields={"text": str(i)}, content_hash=str(i)))
        tokens = [create_token(s, name=f"w{k}", role="annotator", projects=[project]) for k in range(ANNOTATORS)]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    acked: dict[int, str] = {}
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def annotator(token: str, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=20) as client:
            while not stop.is_set():
                r = _until_answered(lambda: client.get("/api/v1/projects/crash/tasks/next"))
                with lock:
                    statuses[r.status_code] += 1
                if r.status_code != 200:
                    time.sleep(0.05)
                    continue
                lease = r.json()["lease_token"]
                body, key = {"label": rng.choice("ab")}, f"{seed}-{lease}"
                v = _until_answered(functools.partial(client.post, f"/api/v1/projects/crash/tasks/{lease}/vote",
                                                      json=body, headers={"Idempotency-Key": key}))
                with lock:
                    statuses[v.status_code] += 1
                    if v.status_code == 201:
                        acked[v.json()["vote_id"]] = key

    server = _start(db_url, port, log)
    threads = [threading.Thread(target=annotator, args=(t, k)) for k, t in enumerate(tokens)]
    for t in threads:
        t.start()
    try:
        for _ in range(CRASHES):
            time.sleep(random.uniform(1.0, 2.5))
            server.send_signal(signal.SIGKILL)
            server.wait()
            server = _start(db_url, port, log)
        time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
        server.send_signal(signal.SIGKILL)
        server.wait()

    with engine.connect() as conn:
        stored = set(conn.execute(select(Vote.id)).scalars())
        pairs = conn.execute(select(func.count()).select_from(select(Vote.item_id, Vote.voter_id).distinct().subquery())).scalar_one()
    print(f"\ncrash: {len(acked)} votes acknowledged across {CRASHES} kill -9, statuses {dict(statuses)}")
    assert not [s for s in statuses if s >= 500], f"{statuses}\n{log.read_text()[-3000:]}"
    assert len(acked) >= 20, f"too little traffic: {statuses}"
    assert set(acked) <= stored, f"acknowledged but lost: {sorted(set(acked) - stored)[:5]}"
    assert pairs == len(stored), "a vote was stored twice for one annotator and item"
    assert len(stored) == len(acked), "stored votes that were never acknowledged despite retries"
