"""Several writer processes on one database, and an import too large to hold in memory."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from llmlabel.store.tables import Item, Vote

from .conftest import Loaded, count

WORKERS = Path(__file__).with_name("workers.py")


def start(job: str, args: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKERS), job, json.dumps(args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def result_of(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_four_processes_vote_at_once(loaded: Loaded, db_url: str, tmp_path: Path) -> None:
    """SQLite: BEGIN IMMEDIATE must queue writers instead of failing "database is locked".
    PostgreSQL has row locks and no such failure; a shorter run checks the same counts."""
    n_items, n_procs = (1000 if db_url.startswith("sqlite") else 250), 4
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"id": f"i{n}", "text": "x"}) + "\n" for n in range(n_items)), encoding="utf-8")
    from llmlabel.ingest import import_items

    import_items(loaded.engine, project=loaded.project, config=loaded.config, path=path)
    go = tmp_path / "go"
    procs = [
        start("votes", {"url": db_url, "project": loaded.project.name, "voter": f"w{k}",
                        "go": str(go), "ready": str(tmp_path / f"ready{k}")})
        for k in range(n_procs)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{k}").exists() for k in range(n_procs)):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
        assert time.monotonic() < deadline, "workers never got ready"
        time.sleep(0.05)
    go.touch()  # all four start writing together
    results = [result_of(p) for p in procs]
    errors = [e for r in results for e in r["errors"]]
    assert errors == [], f"{len(errors)} failed transactions, e.g. {errors[:3]}"
    assert [r["ok"] for r in results] == [n_items] * n_procs
    assert count(loaded.engine, Vote) == n_items * n_procs
    with loaded.engine.connect() as conn:
        counts = set(conn.execute(select(Item.vote_count)).scalars())
        per_item = conn.execute(select(func.count()).select_from(Vote).group_by(Vote.item_id)).scalars().all()
    assert counts == {n_procs}, "no lost updates of vote_count"
    assert set(per_item) == {n_procs}


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_large_import_has_bounded_memory(loaded: Loaded, db_url: str, project_file: Path, tmp_path: Path) -> None:
    n = 100_000
    path = tmp_path / "big.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"item-{i}", "text": f"review number {i} " + "lorem ipsum " * 8, "n": i}) + "\n")
    result = result_of(start("import", {"url": db_url, "project_file": str(project_file), "path": str(path)}))
    assert result["inserted"] == n
    assert count(loaded.engine, Item) == n
    assert result["growth_mb"] < 150, result
    print(f"\n100k-row import: {n / result['seconds']:,.0f} rows/s, peak RSS growth {result['growth_mb']:.0f} MB")
