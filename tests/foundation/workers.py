"""Work run in a fresh process by the foundation tests (``python workers.py JOB JSON-ARGS``).

- ``votes``: one voter casting a vote on every item, one transaction per vote, the way a
  labeler worker does (read the item, insert the vote, bump the item's count). Exceptions are
  collected, not raised, and the result is printed as JSON.
- ``import``: import one file and report the growth of the peak RSS it caused.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from llmlabel.config import load_config
from llmlabel.ingest import import_items
from llmlabel.projects import get_or_create_voter, get_project
from llmlabel.store.db import make_engine, session_scope
from llmlabel.store.tables import Item, Vote


def _wait_for(go: Path, ready: Path) -> None:
    ready.touch()
    deadline = time.monotonic() + 120
    while not go.exists():
        if time.monotonic() > deadline:
            raise SystemExit("never told to go")
        time.sleep(0.01)


def cast_votes(args: dict[str, Any]) -> dict[str, Any]:
    engine = make_engine(args["url"])
    with session_scope(engine) as session:
        project = get_project(session, name=args["project"])
        voter = get_or_create_voter(session, project_id=project.id, name=args["voter"], kind="llm")
        item_ids = list(session.scalars(select(Item.id).where(Item.project_id == project.id).order_by(Item.id)))
    _wait_for(Path(args["go"]), Path(args["ready"]))
    ok, errors = 0, []
    for item_id in item_ids:
        try:
            with session_scope(engine) as session:
                item = session.get(Item, item_id)
                assert item is not None
                session.add(Vote(project_id=project.id, item_id=item_id, voter_id=voter.id, label="positive", confidence=0.9))
                session.execute(update(Item).where(Item.id == item_id).values(vote_count=Item.vote_count + 1))
            ok += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    engine.dispose()
    return {"ok": ok, "errors": errors}


def rss_mb() -> float:
    """The resident set now (Linux), else the peak so far."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: on Linux that keeps the parent's peak across exec."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def import_file(args: dict[str, Any]) -> dict[str, Any]:
    config = load_config(args["project_file"])
    engine = make_engine(args["url"])
    with session_scope(engine) as session:
        project = get_project(session, name=config.name)
    before = rss_mb()
    start = time.perf_counter()
    report = import_items(engine, project=project, config=config, path=Path(args["path"]))
    seconds = time.perf_counter() - start
    peak = peak_mb()
    return {"inserted": report.inserted, "seconds": seconds, "growth_mb": peak - before, "peak_mb": peak}


if __name__ == "__main__":
    job, raw = sys.argv[1], sys.argv[2]
    print(json.dumps({"votes": cast_votes, "import": import_file}[job](json.loads(raw))))
