"""Migrations: an empty database reaches head, again is a no-op, a newer one is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from llmlabel.errors import StorageError
from llmlabel.store.db import current_revision, head_revision, make_engine, open_engine, upgrade

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
