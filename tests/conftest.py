"""Fixtures shared by every test folder: a real database per test, and project files.

``db_url`` runs a test twice: on a fresh SQLite file and on a fresh PostgreSQL schema (its own
``search_path``, dropped afterwards, so parallel or aborted runs never collide). PostgreSQL is
taken from ``LLMLABEL_TEST_POSTGRES_URL``; when it is unreachable the postgres runs are skipped,
or fail when ``LLMLABEL_REQUIRE_POSTGRES=1`` (CI).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import Engine

from llmlabel import decisions
from llmlabel.store.db import open_engine

CHROMIUM = Path(os.environ.get("LLMLABEL_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-quic", "--disable-sync"]
POSTGRES_URL = os.environ.get("LLMLABEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

SMALL_PROJECT = {
    "name": "reviews",
    "labels": {"type": "single", "classes": ["positive", "negative", "neutral"]},
    "item_template": "{{ text }}",
}


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1).replace("postgres://", "postgresql://", 1)


@cache
def _postgres_unreachable() -> str | None:
    """Why PostgreSQL cannot be used, or None when it can (checked once per session)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        with psycopg.connect(_libpq(POSTGRES_URL), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {str(exc).strip().splitlines()[0]}"
    return None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a schema of its own, dropped after the test."""
    reason = _postgres_unreachable()
    if reason:
        if os.environ.get("LLMLABEL_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"LLMLABEL_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    base = _libpq(POSTGRES_URL)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '20s'")
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL with nothing in it: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'llmlabel.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def _sqlite_at_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head; tests start from copies (migrating costs ~0.3 s)."""
    path = tmp_path_factory.mktemp("template") / "head.db"
    open_engine(f"sqlite:///{path}").dispose()
    return path


@pytest.fixture
def engine(db_url: str, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An engine on ``db_url`` with the schema at head."""
    if db_url.startswith("sqlite:///"):
        target = Path(db_url.removeprefix("sqlite:///"))
        if not target.exists():
            shutil.copyfile(request.getfixturevalue("_sqlite_at_head"), target)
    eng = open_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def write_project(tmp_path: Path) -> Callable[..., Path]:
    """Write a project file from YAML text or a mapping; returns its path."""

    def write(content: str | dict[str, Any], name: str = "project.yaml") -> Path:
        path = tmp_path / name
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False, allow_unicode=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def project_file(write_project: Callable[..., Path]) -> Path:
    """A small single-choice project (positive / negative / neutral, items with ``text``)."""
    return write_project(SMALL_PROJECT)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any | None]:
    """A headless system Chromium for a test module, driven by Playwright; None when the
    Python 'playwright' package is missing. Every browser test takes it from here, one module
    at a time: Playwright's sync API cannot start while another instance runs in the process
    (a session-long browser in one folder broke the next folder's), and while it runs it holds
    an event loop in the main thread, so a browser kept for the whole session broke every later
    test that calls asyncio.run()."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set LLMLABEL_CHROMIUM)")
    try:
        from playwright import sync_api
    except ImportError:
        yield None
        return
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(autouse=True)
def _fresh_fits() -> Iterator[None]:
    """Each test starts with no consensus fit cached in the process: fits are keyed by database
    URL and project id, but a test must not depend on what an earlier one left behind."""
    decisions._fits.clear()
    yield
    decisions._fits.clear()
