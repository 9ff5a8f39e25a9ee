"""Load on the annotation service: simulated annotators over HTTP, then the invariants in the database.

    python bench/service_load.py                          # 120 s per database, SQLite and PostgreSQL
    python bench/service_load.py --seconds 30 --db sqlite
    python bench/service_load.py --workers 3 --db postgres --annotators 50 --postgres-url postgresql://postgres@127.0.0.1:5432/test

Per database: a fresh database (a SQLite file, or a PostgreSQL schema of its own) with one
project, ``--items`` items (a few gold), an annotator token each; consensus fitted once, as an
admin does after an import. Then ``uvicorn llmlabel.api.server:app_from_env`` runs with
``--workers`` processes on 127.0.0.1, and ``--annotators`` simulated annotators (aiohttp
clients, one connection each, in one asyncio loop) take the next task and answer it, as fast
as the server lets them, for ``--seconds``. Prints votes/s and the p50/p99 latency of
``GET …/tasks/next`` and ``POST …/vote``, then checks in the database: every 201 is a vote row
(0 lost), no (item, voter) twice (0 duplicated), no item leased to more annotators at once than
the votes it still needed (0 over-assigned), and no 5xx.

The baseline, run first in the same process with the same annotators and uvicorn settings, is
a FastAPI app whose two routes answer a canned task and a canned vote without touching a
database: the ceiling of HTTP, FastAPI and the load generator on this machine, against which
llmlabel's votes/s are also printed as a ratio.
Goal: ≥ 500 votes/s with p99 < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

DEFAULT_PG = os.environ.get("LLMLABEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
LABELS = ["positive", "negative", "neutral"]
MIN_HUMAN_VOTES = 1
# SQLite: one writer at a time, so a second process only adds lock hand-offs (2 workers: 405–439
# votes/s against 439–527 with 1, measured on one 2-core machine); PostgreSQL: the
# annotator routes run inline on each worker's event loop, so concurrency is processes (3 on
# 2 cores measured best: 178 votes/s against 151 with 4 and 121 with 2 threaded ones)
DEFAULT_WORKERS = {"sqlite": 1, "postgres": 3}
GOAL_VOTES_PER_S = 500
GOAL_P99_MS = 100
PROJECT: dict[str, Any] = {
    "name": "load",
    "instructions": {"guidelines": "Pick the sentiment."},
    "labels": {"type": "single", "classes": LABELS},
    "policy": {"qualification_tasks": 0, "gold_rate": 0.02, "quality_bar": 0.2,  # a throughput bench: few gated
               "min_human_votes": MIN_HUMAN_VOTES, "max_votes": 3, "target_confidence": 0.9},
}


def truth(item_id: str) -> str:
    return LABELS[int(item_id.rsplit("-", 1)[1]) % 3]


# ---------------------------------------------------------------------------------------------
# the database


@dataclass
class Database:
    url: str
    cleanup: Any = None


def fresh_database(kind: str, pg_url: str, tmp: Path) -> Database:
    if kind == "sqlite":
        return Database(f"sqlite:///{tmp / 'load.db'}")
    import psycopg

    base = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')

    sep = "&" if "?" in base else "?"
    return Database(f"{base}{sep}options=-csearch_path%3D{schema}", drop)


def seed(url: str, *, items: int, annotators: int, tmp: Path) -> list[str]:
    """The project, its items (2% gold), one token per annotator; consensus fitted once."""
    from llmlabel.access import create_token
    from llmlabel.config import parse_config
    from llmlabel.decisions import refit
    from llmlabel.ingest import import_items
    from llmlabel.projects import sync_project
    from llmlabel.store.db import open_engine, session_scope

    engine = open_engine(url)
    config = parse_config(PROJECT)
    with session_scope(engine) as session:
        project = sync_project(session, config=config)
    path = tmp / "items.jsonl"
    with path.open("w") as fh:
        for i in range(items):
            item_id = f"it-{i:07d}"
            gold = truth(item_id) if i % 50 == 0 else ""
            fh.write(json.dumps({"id": item_id, "text": f"review {i}: it was {random.choice(['ok', 'bad', 'fine'])}",
                                 "gold": gold}) + "\n")
    import_items(engine, project=project, config=config, path=path, gold_field="gold")
    with session_scope(engine) as session:
        tokens = [create_token(session, name=f"ann{i:03d}", role="annotator", projects=[project])
                  for i in range(annotators)]
        refit(session, project=project, config=config)
    if engine.dialect.name == "postgresql":  # fresh planner statistics, as autovacuum gathers after a bulk load
        from sqlalchemy import text

        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    engine.dispose()
    return tokens


# ---------------------------------------------------------------------------------------------
# the server


class BaselineVote(BaseModel):  # module level: FastAPI resolves the route's annotations here
    label: Any


def baseline_app() -> Any:
    """The two annotator routes with the same shapes as llmlabel's and no work behind them."""
    from fastapi import FastAPI, Header

    app = FastAPI()
    counter = iter(range(1, 1 << 62))

    @app.get("/api/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/projects/{name}/tasks/next")
    async def next_task(name: str, authorization: str = Header()) -> dict[str, Any]:
        n = next(counter)
        return {"lease_token": f"lease-{n}", "item_id": f"it-{n % 50_000:07d}", "text": "review: it was ok",
                "fields": {"text": "review: it was ok"}, "choices": LABELS, "instructions": "Pick the sentiment.",
                "expires_at": "2030-01-01T00:00:00", "suggestions": []}

    @app.post("/api/v1/projects/{name}/tasks/{lease}/vote", status_code=201)
    async def vote(name: str, lease: str, body: BaselineVote, authorization: str = Header()) -> dict[str, Any]:
        return {"item_id": "it-0000000", "vote_id": next(counter), "created": False}

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str | None, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """llmlabel's server on the database ``url``; the baseline app when ``url`` is None."""
    port = free_port()
    env = {**os.environ, "LLMLABEL_DATABASE_URL": url or "", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'bench'}"}
    app = "llmlabel.api.server:app_from_env" if url else "service_load:baseline_app"
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(base + "/api/v1/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not come up in 60 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _processes() -> list[tuple[int, int, str, float]]:
    """(pid, parent pid, name, CPU seconds) of every process, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        out.append((int(entry), int(fields[1]), name, (int(fields[11]) + int(fields[12])) / tick))
    return out


def cpu_seconds(root: int) -> tuple[float, float]:
    """CPU seconds used so far by the server (``root`` and its descendants) and by PostgreSQL."""
    procs = _processes()
    tree: set[int] = {root}
    while True:
        grown = tree | {pid for pid, ppid, _, _ in procs if ppid in tree}
        if grown == tree:
            break
        tree = grown
    server = sum(cpu for pid, _, _, cpu in procs if pid in tree)
    database = sum(cpu for _, _, name, cpu in procs if name.startswith("postgres"))
    return server, database


# ---------------------------------------------------------------------------------------------
# the annotators


@dataclass
class Tally:
    next_ms: list[float] = field(default_factory=list)
    vote_ms: list[float] = field(default_factory=list)
    created: list[int] = field(default_factory=list)  # vote ids answered 201, created
    voted_at: list[float] = field(default_factory=list)  # monotonic time of each 201
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


async def annotator(base: str, token: str, seed_: int, tally: Tally, stop_at: float) -> None:
    """One annotator on one keep-alive connection. aiohttp rather than httpx: the load
    generator shares the 2 cores with the server, and httpx spends several times more CPU per
    request, which would be measured as the server's slowness."""
    import aiohttp

    rng = random.Random(seed_)
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(base, headers=headers, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as client:
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            async with client.get("/api/v1/projects/load/tasks/next") as r:
                body = await r.read()
            tally.next_ms.append((time.perf_counter() - t0) * 1000)
            tally.statuses[("next", r.status)] += 1
            if r.status >= 500:
                tally.errors.append(f"next {r.status} {body[:200]!r}")
            if r.status == 204:
                await asyncio.sleep(0.2)
                continue
            if r.status != 200:
                return  # gated (403) or broken: this annotator stops
            task = json.loads(body)
            label = truth(task["item_id"]) if rng.random() < 0.95 else rng.choice(LABELS)
            t0 = time.perf_counter()
            async with client.post(f"/api/v1/projects/load/tasks/{task['lease_token']}/vote", json={"label": label},
                                   headers={"Idempotency-Key": uuid.uuid4().hex}) as v:
                body = await v.read()
            tally.vote_ms.append((time.perf_counter() - t0) * 1000)
            tally.statuses[("vote", v.status)] += 1
            if v.status == 201:
                tally.voted_at.append(time.monotonic())
                answer = json.loads(body)
                if answer["created"]:
                    tally.created.append(answer["vote_id"])
            elif v.status >= 500:
                tally.errors.append(f"vote {v.status} {body[:200]!r}")


async def hammer(base: str, tokens: list[str], seconds: float) -> tuple[Tally, float]:
    tally = Tally()
    started = time.monotonic()
    await asyncio.gather(*(annotator(base, t, i, tally, started + seconds) for i, t in enumerate(tokens)))
    return tally, time.monotonic() - started


# ---------------------------------------------------------------------------------------------
# the invariants


def check(url: str, tally: Tally) -> dict[str, Any]:
    from sqlalchemy import select

    from llmlabel.store.db import make_engine
    from llmlabel.store.tables import Lease, Vote, Voter

    engine = make_engine(url)
    with engine.connect() as conn:
        votes = conn.execute(select(Vote.id, Vote.item_id, Vote.voter_id, Vote.created_at)
                             .join(Voter, Voter.id == Vote.voter_id).where(Voter.kind == "human")).all()
        leases = conn.execute(select(Lease.item_id, Lease.voter_id, Lease.state, Lease.is_gold, Lease.created_at,
                                     Lease.expires_at).where(Lease.is_human)).all()
    engine.dispose()
    stored = {v.id for v in votes}
    answered = set(tally.created)
    duplicated = sum(n - 1 for n in Counter((v.item_id, v.voter_id) for v in votes).values())
    voted_at = {(v.item_id, v.voter_id): v.created_at for v in votes}
    spans: dict[int, list[tuple[datetime, datetime | None]]] = defaultdict(list)
    for lease in leases:
        if lease.is_gold:
            continue  # gold is served to everyone, whatever it needs
        end = voted_at.get((lease.item_id, lease.voter_id)) if lease.state == "done" else (
            lease.expires_at if lease.state == "expired" else None)
        spans[lease.item_id].append((lease.created_at, end))
    votes_of: dict[int, list[datetime]] = defaultdict(list)
    for (item_id, _), t in voted_at.items():
        votes_of[item_id].append(t)
    over = 0
    for item_id, item_spans in spans.items():
        for start, _ in item_spans:
            live = sum(1 for s, e in item_spans if s < start and (e is None or e > start))
            allowed = max(1, MIN_HUMAN_VOTES - sum(1 for t in votes_of[item_id] if t < start))
            over += live + 1 > allowed
    return {
        "vote_rows": len(votes),
        "lost_votes": len(answered - stored),
        "unexplained_rows": len(stored - answered),
        "duplicated_votes": duplicated,
        "over_assigned_leases": over,
        "5xx": sum(n for (_, status), n in tally.statuses.items() if status >= 500),
    }


# ---------------------------------------------------------------------------------------------


def by_quarter(times: list[float], started: float, seconds: float) -> list[float]:
    """Votes/s in each quarter of the run: whether the rate holds as the open items run out
    and the tables grow."""
    counts = Counter(min(3, int(4 * (t - started) / seconds)) for t in times)
    return [round(counts[q] / (seconds / 4), 1) for q in range(4)]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def baseline(workers: int, args: argparse.Namespace) -> float:
    """Votes/s of the annotators against the baseline app (no invariants: it stores nothing)."""
    proc, base = start_server(None, workers)
    try:
        tally, seconds = asyncio.run(hammer(base, [f"t{i}" for i in range(args.annotators)], args.baseline_seconds))
    finally:
        stop_server(proc)
    votes = sum(n for (op, status), n in tally.statuses.items() if op == "vote" and status == 201)
    print(f"[baseline, {workers} workers] {votes / seconds:.1f} votes/s; next p99 {pct(tally.next_ms, 0.99):.1f} ms, "
          f"vote p99 {pct(tally.vote_ms, 0.99):.1f} ms", flush=True)
    return votes / seconds


def run(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        db = fresh_database(kind, args.postgres_url, tmp)
        try:
            t0 = time.monotonic()
            tokens = seed(db.url, items=args.items, annotators=args.annotators, tmp=tmp)
            print(f"[{kind}] seeded {args.items} items, {args.annotators} annotators in {time.monotonic() - t0:.1f} s",
                  flush=True)
            workers = args.workers or DEFAULT_WORKERS[kind]
            proc, base = start_server(db.url, workers)
            try:
                server0, database0, own0 = *cpu_seconds(proc.pid), time.process_time()
                started = time.monotonic()
                tally, seconds = asyncio.run(hammer(base, tokens, args.seconds))
                server1, database1, own1 = *cpu_seconds(proc.pid), time.process_time()
            finally:
                stop_server(proc)
            invariants = check(db.url, tally)
        finally:
            if db.cleanup:
                db.cleanup()
    votes = sum(n for (op, status), n in tally.statuses.items() if op == "vote" and status == 201)
    result = {
        "db": kind, "workers": workers, "annotators": args.annotators, "seconds": round(seconds, 1),
        "votes": votes, "votes_per_s": round(votes / seconds, 1),
        "next_p50_ms": round(pct(tally.next_ms, 0.5), 1), "next_p99_ms": round(pct(tally.next_ms, 0.99), 1),
        "vote_p50_ms": round(pct(tally.vote_ms, 0.5), 1), "vote_p99_ms": round(pct(tally.vote_ms, 0.99), 1),
        "server_cpu_ms_per_vote": round(1000 * (server1 - server0) / max(votes, 1), 2),
        "database_cpu_ms_per_vote": round(1000 * (database1 - database0) / max(votes, 1), 2) if kind == "postgres" else None,
        "annotators_cpu_ms_per_vote": round(1000 * (own1 - own0) / max(votes, 1), 2),
        "votes_per_s_by_quarter": by_quarter(tally.voted_at, started, seconds),
        "statuses": {f"{op} {status}": n for (op, status), n in sorted(tally.statuses.items())},
        **invariants,
    }
    if tally.errors:
        result["first_errors"] = tally.errors[:3]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="how long the annotators work, per database")
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--workers", type=int, default=0,
                        help="uvicorn worker processes (default: 1 on SQLite, 3 on PostgreSQL)")
    # enough open items to last a run at the goal rate (500/s for 120 s, and items that want a
    # second vote): with 50,000 the last quarter of a SQLite run found no task 2,547 times
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--postgres-url", default=DEFAULT_PG)
    parser.add_argument("--baseline-seconds", type=float, default=20.0, help="how long the baseline runs (0: skip it)")
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    results = []
    ceilings: dict[int, float] = {}
    for kind in kinds:
        workers = args.workers or DEFAULT_WORKERS[kind]
        if args.baseline_seconds > 0 and workers not in ceilings:
            ceilings[workers] = baseline(workers, args)
        r = run(kind, args)
        if workers in ceilings:
            r["baseline_votes_per_s"] = round(ceilings[workers], 1)
            r["ratio_to_baseline"] = round(r["votes_per_s"] / ceilings[workers], 3)
            print(f"[{kind}] {r['ratio_to_baseline']:.3f}× the baseline's {ceilings[workers]:.1f} votes/s")
        results.append(r)
        ok_speed = r["votes_per_s"] >= GOAL_VOTES_PER_S and max(r["next_p99_ms"], r["vote_p99_ms"]) < GOAL_P99_MS
        ok_data = not any(r[k] for k in ("lost_votes", "unexplained_rows", "duplicated_votes", "over_assigned_leases", "5xx"))
        print(f"[{kind}] {r['votes_per_s']} votes/s over {r['seconds']} s ({r['workers']} workers, {r['annotators']} annotators); "
              f"next p50 {r['next_p50_ms']} ms p99 {r['next_p99_ms']} ms; vote p50 {r['vote_p50_ms']} ms p99 {r['vote_p99_ms']} ms "
              f"— goal {GOAL_VOTES_PER_S}/s, p99 < {GOAL_P99_MS} ms: {'met' if ok_speed else 'NOT met'}")
        print(f"[{kind}] CPU per vote: server {r['server_cpu_ms_per_vote']} ms, "
              + (f"PostgreSQL {r['database_cpu_ms_per_vote']} ms, " if kind == "postgres" else "")
              + f"simulated annotators {r['annotators_cpu_ms_per_vote']} ms; load average {os.getloadavg()[0]:.1f}")
        print(f"[{kind}] votes/s by quarter of the run: {', '.join(str(v) for v in r['votes_per_s_by_quarter'])}")
        print(f"[{kind}] invariants: {r['vote_rows']} vote rows, lost {r['lost_votes']}, unexplained {r['unexplained_rows']}, "
              f"duplicated {r['duplicated_votes']}, over-assigned {r['over_assigned_leases']}, 5xx {r['5xx']} "
              f"— {'ok' if ok_data else 'BROKEN'}")
        print(f"[{kind}] statuses: {r['statuses']}", flush=True)
        if "first_errors" in r:
            print(f"[{kind}] first errors: {r['first_errors']}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
