"""Migrations: an empty database reaches head, again is a no-op, a newer one is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from llmlabel.config import parse_config
from llmlabel.errors import StorageError
from llmlabel.projects import get_or_create_voter, sync_project
from llmlabel.store.db import (
    _alembic_config,
    current_revision,
    head_revision,
    make_engine,
    open_engine,
    session_scope,
    upgrade,
)
from llmlabel.store.tables import Item

from .conftest import run_cli


def test_upgrade_from_empty_reaches_head_and_is_then_a_noop(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) is None
        assert upgrade(engine) == (None, head_revision())
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
        assert {"projects", "items", "gold", "voters", "votes", "leases", "llm_calls", "alembic_version"} <= tables
        assert upgrade(engine) == (head_revision(), head_revision())
    finally:
        engine.dispose()


def test_cli_db_upgrade(db_url: str, tmp_path: Path) -> None:
    first = run_cli("db", "upgrade", "--db", db_url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"database at revision {head_revision()} (was empty)" in first.stdout
    again = run_cli("db", "upgrade", "--db", db_url, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "(already current)" in again.stdout


def test_database_from_a_newer_llmlabel_is_refused(db_url: str, tmp_path: Path) -> None:
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
        with pytest.raises(StorageError, match=r"revision '9999_future'.*written by a newer llmlabel"):
            upgrade(engine)
        with pytest.raises(StorageError, match="newer llmlabel"):
            open_engine(db_url).dispose()
        assert current_revision(engine) == "9999_future", "a refused database is left untouched"
    finally:
        engine.dispose()
    result = run_cli("db", "upgrade", "--db", db_url, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "newer llmlabel" in lines[0]
    assert "Traceback" not in result.stderr


def test_unusable_database_urls(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="unsupported database 'mysql'"):
        make_engine("mysql://localhost/x")
    with pytest.raises(StorageError, match="is not valid"):
        make_engine("not a url")
    unreachable = make_engine("postgresql://postgres@127.0.0.1:1/none")
    with pytest.raises(StorageError, match="cannot open the database"):
        upgrade(unreachable)


def test_0004_flags_the_votes_already_cast_on_gold_items(db_url: str) -> None:
    """A database from before 0004 gets ``votes.on_gold`` from its gold table on upgrade."""
    from alembic import command

    engine = open_engine(db_url)
    try:
        with session_scope(engine) as s:
            project = sync_project(s, config=parse_config({"name": "m", "labels": {"type": "single", "classes": ["x", "y"]}}))
            items = [Item(project_id=project.id, external_id=e, fields={"text": e}, content_hash=e) for e in "ab"]
            s.add_all(items)
            s.flush()
            pid, ids = project.id, {it.external_id: it.id for it in items}
            voter = get_or_create_voter(s, project_id=pid, name="v", kind="human").id  # type: ignore[arg-type]
        command.downgrade(_alembic_config(engine), "0003")
        with engine.begin() as conn:
            for ext in ("a", "b"):
                conn.execute(text("INSERT INTO votes (project_id, item_id, voter_id, label, cost_usd, unsure, created_at) "
                                  "VALUES (:p, :i, :v, '\"x\"', 0, FALSE, '2026-01-01')"), {"p": pid, "i": ids[ext], "v": voter})
            conn.execute(text("INSERT INTO gold (project_id, item_id, label, source, weight, split, created_at) "
                              "VALUES (:p, :i, '\"x\"', 'imported', 1, 'dev', '2026-01-01')"), {"p": pid, "i": ids["a"]})
        assert upgrade(engine) == ("0003", head_revision())
        with engine.connect() as conn:
            flags = dict(conn.execute(text("SELECT item_id, on_gold FROM votes")).all())
            indexes = {ix["name"] for ix in inspect(conn).get_indexes("votes")}
        assert flags == {ids["a"]: True, ids["b"]: False}
        assert "ix_votes_gold_answers" in indexes
    finally:
        engine.dispose()
