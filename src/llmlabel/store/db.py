"""Engines and migrations: a SQLite file by default, PostgreSQL by URL.

SQLite is tuned so that several processes can write one file without "database is locked":
WAL (readers never block the writer), a generous busy timeout, and write transactions begun
with ``BEGIN IMMEDIATE``. The last one matters most: a deferred transaction that reads first
and writes later cannot wait for the lock (SQLite fails it at once to avoid a deadlock), while
an IMMEDIATE one takes the write lock up front and simply waits its turn. That turn is handed
on by a lock file beside the database (``_WriterTurn``), so a waiting writer goes as soon as
the lock is free instead of sleeping in SQLite's busy handler.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlmodel import Session, create_engine

from llmlabel.errors import StorageError
from llmlabel.store import tables

try:
    import fcntl
except ImportError:  # Windows: writers meet at SQLite's own lock only
    fcntl = None  # type: ignore[assignment]

MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_SECONDS = 60.0  # how long a SQLite writer waits for its turn before failing
RESTART_FRAMES = 8192  # a server starts the SQLite WAL over once it holds this many pages (32 MB)
RESTART_WAIT_MS = 20  # how long that restart may wait for readers of the old log, writers held off
CHECKPOINT_SECONDS = 0.25  # SQLite: how often a server checkpoints the WAL beside its requests
STATISTICS_SECONDS = 15.0  # PostgreSQL: how often it looks for tables whose statistics are stale
_upgrade_lock = threading.Lock()


def normalize_url(url: str) -> str:
    """Accept the URLs people paste (``postgres://``, ``postgresql://``) and pick psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def default_url(directory: Path) -> str:
    return f"sqlite:///{(directory / 'llmlabel.db').resolve()}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event issue BEGIN itself
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA journal_size_limit=67108864")  # a log started over is cut back to 64 MB
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class _WriterTurn:
    """Whose turn it is to write one SQLite file, among this process's threads and every
    other process: a thread lock, then an exclusive ``flock`` on a file beside the database.

    Without it, writers meet only at SQLite's own lock, and one that finds it taken sleeps in
    SQLite's busy handler (1, 2, 5, 10, … up to 100 ms at a time) instead of going when the
    lock is free: measured with two server processes on one file, 419 votes/s with a p99 of
    0.54–0.62 s, against 405–439 and 0.16–0.17 s with the turn. Taken before ``BEGIN IMMEDIATE``
    and given back after ``COMMIT`` or ``ROLLBACK``, it is held exactly while SQLite's write
    lock may be, so it adds no new way to wait; like SQLite's busy timeout, a wait longer than
    ``BUSY_SECONDS`` fails instead of hanging behind a stopped process.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.fd = os.open(path + "-writer", os.O_RDWR | os.O_CREAT, 0o644)

    def take(self) -> None:
        deadline = time.monotonic() + BUSY_SECONDS
        if not self.lock.acquire(timeout=BUSY_SECONDS):
            raise self._busy("another thread of this process")
        pause = 0.00005
        try:
            while True:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    # a blocking flock would wake sooner but cannot time out
                    if time.monotonic() > deadline:
                        raise self._busy("another process") from None
                    time.sleep(pause)
                    pause = min(pause * 2, 0.001)
        except BaseException:
            self.lock.release()
            raise

    def _busy(self, holder: str) -> StorageError:
        return StorageError(f"the SQLite database {self.path!r} stayed locked for writing by {holder} for "
                            f"{BUSY_SECONDS:.0f} s; is a stopped llmlabel process holding it? Resume or end it.")

    def give(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.lock.release()


_turns: dict[str, _WriterTurn] = {}  # one per database file and process: threads share it
_TURN = "llmlabel.writer_turn"  # in a pooled connection's info while it holds the turn


def _writer_turn(database: str | None) -> _WriterTurn | None:
    """The turn of the SQLite file ``database`` (a URL's path); None in memory or on Windows."""
    if fcntl is None or not database or database == ":memory:":
        return None
    path = str(Path(database).resolve())
    with _upgrade_lock:
        turn = _turns.get(path)
        if turn is None:
            turn = _turns[path] = _WriterTurn(path)
        return turn


def _sqlite_begin(turn: _WriterTurn | None) -> Callable[[Any], None]:
    def begin(conn: Any) -> None:
        driver = conn.connection.driver_connection
        # on the driver itself: every request begins one, and SQLAlchemy's statement execution
        # around it cost 18 us of the 71 a whole begin-commit round took (measured)
        if conn.get_execution_options().get("llmlabel_readonly", False):
            driver.execute("BEGIN")
            return
        if turn is None:
            driver.execute("BEGIN IMMEDIATE")
            return
        turn.take()
        try:
            driver.execute("BEGIN IMMEDIATE")
        except BaseException:
            turn.give()
            raise
        conn.info[_TURN] = turn

    return begin


def _end_turn(driver: Any, turn: _WriterTurn, statement: str) -> None:
    try:
        if driver.in_transaction:
            driver.execute(statement)
    finally:
        turn.give()


def _sqlite_end(statement: str) -> Callable[[Any], None]:
    """End the transaction on the driver, then give the turn back: SQLAlchemy's own
    commit/rollback, which runs after this event, finds no transaction and does nothing."""

    def end(conn: Any) -> None:
        turn = conn.info.pop(_TURN, None)
        if turn is not None:
            _end_turn(conn.connection.driver_connection, turn, statement)

    return end


def _sqlite_dropped(dbapi_conn: Any, record: Any, _why: Any) -> None:
    """A connection back in the pool, or invalidated, in the middle of a transaction."""
    turn = record.info.pop(_TURN, None)
    if turn is not None:
        with suppress(Exception):  # the connection is being discarded: only the turn matters
            _end_turn(dbapi_conn, turn, "ROLLBACK")


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(
            f"database URL {url!r} is not valid; use sqlite:///path/to/file.db or "
            "postgresql://user@host:5432/dbname"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Writers queue on SQLite's lock, not on the pool: one connection per server thread
        # (FastAPI runs sync routes on 40), so a burst waits for the lock instead of timing out.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": BUSY_SECONDS},
                               pool_size=64, max_overflow=64, pool_timeout=120)
        event.listen(engine, "connect", _sqlite_pragmas)
        turn = _writer_turn(parsed.database)
        event.listen(engine, "begin", _sqlite_begin(turn))
        if turn is not None:  # only a held turn has anything to give back
            event.listen(engine, "commit", _sqlite_end("COMMIT"))
            event.listen(engine, "rollback", _sqlite_end("ROLLBACK"))
            event.listen(engine, "reset", _sqlite_dropped)
            event.listen(engine, "invalidate", _sqlite_dropped)
        return engine
    if parsed.get_backend_name() == "postgresql":
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise StorageError(
                "PostgreSQL needs the psycopg driver: pip install 'llmlabel[postgres]'"
            ) from None
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=40, pool_timeout=60)
    raise StorageError(f"unsupported database {parsed.get_backend_name()!r}: use SQLite or PostgreSQL")


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(None)  # type: ignore[arg-type]
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except OperationalError as exc:
        first_line = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        raise StorageError(f"cannot open the database at {engine.url.render_as_string()!r}: {first_line}") from None


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the newest revision; refuse a database from a newer llmlabel."""
    from alembic import command
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(engine)
    known = {rev.revision for rev in ScriptDirectory.from_config(cfg).walk_revisions()}
    before = current_revision(engine)
    if before is not None and before not in known:
        raise StorageError(
            f"the database is at revision {before!r}, which this llmlabel does not know: it was "
            "written by a newer llmlabel. Upgrade llmlabel (pip install -U llmlabel) to use it."
        )
    head = head_revision()
    if before != head:
        with _upgrade_lock:
            command.upgrade(cfg, "head")
    return before, head


def open_engine(url: str) -> Engine:
    """An engine whose schema is current, migrating it if it is behind (zero set-up)."""
    engine = make_engine(url)
    upgrade(engine)
    return engine


def reader(engine: Engine) -> Engine:
    """The same engine for transactions that only read: on SQLite they begin deferred, so
    readers never queue behind writers for the write lock."""
    return engine.execution_options(llmlabel_readonly=True)


_aside: dict[Engine, int] = {}  # engines whose checkpoints a running server takes, and how many servers


def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")


# PostgreSQL's own rule for when a table's statistics are stale (autovacuum's defaults)
_STALE = text(
    "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = ANY(:ours)"
    " AND n_mod_since_analyze > 50 + 0.1 * n_live_tup"
    " AND coalesce(greatest(last_analyze, last_autoanalyze), '-infinity') < now() - make_interval(secs => :recent)"
)

_ANALYZING = text("SELECT pg_try_advisory_xact_lock(:key, hashtext(current_schema()))")


def refresh_statistics(engine: Engine, recent_seconds: float = 60.0) -> list[str]:
    """On PostgreSQL, ANALYZE the tables whose statistics are stale by autovacuum's rule and
    that no analyze touched in the last ``recent_seconds``; returns their names. A server
    calls it every STATISTICS_SECONDS (``upkeep_aside``); where autovacuum keeps up it finds
    nothing to do.

    Plans rest on statistics, and a server's prepared statements keep the generic plan they got
    while the tables were small until an ANALYZE replaces it. With autovacuum off (so on the
    machine measured here) or not round yet, the task claim kept plans that scanned the whole
    votes or leases table for every candidate, growing with the tables without bound. Under
    bench/service_load.py on PostgreSQL (75 s, 50,000 items, single runs): the claim's locking
    statement averaged 5.4 ms before, 1.3 ms with the count form of ``leases._none_of`` alone,
    1.2 ms with this as well; PostgreSQL's CPU per vote 8.5, 5.2, 4.9 ms; votes/s 98, 110, 124.
    """
    with engine.connect() as conn:
        # one server process at a time: a second ANALYZE of a table would wait for the first
        if not conn.execute(_ANALYZING, {"key": Leadership.KEY + 1}).scalar():
            return []
        ours = list(tables.SQLModel.metadata.tables)  # in a schema shared with other applications, only ours
        stale = list(conn.execute(_STALE, {"recent": recent_seconds, "ours": ours}).scalars())
        if stale:
            conn.exec_driver_sql("ANALYZE " + ", ".join(conn.dialect.identifier_preparer.quote(t) for t in stale))
        conn.commit()
    return stale


@contextmanager
def upkeep_aside(engine: Engine) -> Iterator[tuple[float, Callable[[], object]]]:
    """What a server runs beside its requests to keep the database fit, and every how many
    seconds: on PostgreSQL ``refresh_statistics``; on SQLite WAL checkpoints, as follows.

    While the server runs, its commits stop checkpointing the WAL, and the callable it gets
    checkpoints on the side. By default the commit that pushes the WAL past
    1,000 pages copies them into the database and syncs it, in the request: measured
    in-process, a next+vote cycle took 1.85 ms of CPU (1.99 ms wall) with those checkpoints
    and 1.49 (1.47) without.

    The copy runs beside the writers (PASSIVE: it never waits for them), so it always ends a
    few commits behind; a log that is never wholly copied is never started over, and under
    load it grew by 80 KB a vote (2 GB in a minute) while every page read searched more of
    it: votes/s fell from 509 to 293 within one minute. So once the log holds RESTART_FRAMES
    pages, a checkpoint holds the writers' turn and starts it over (RESTART), waiting at most
    RESTART_WAIT_MS for readers of the old log. Under the load bench, measured before that
    cap: the log stayed under 55 MB, with about one restart a second holding writers off
    4.8 ms (median; p90 7 ms, max 110 ms: the wait the cap now bounds)."""
    if engine.dialect.name == "postgresql":
        yield STATISTICS_SECONDS, partial(refresh_statistics, engine)
        return
    with _upgrade_lock:  # several servers may share an engine (tests do): the first one sets it up
        _aside[engine] = _aside.get(engine, 0) + 1
        if _aside[engine] == 1:
            event.listen(engine, "connect", _no_autocheckpoint)
            engine.dispose()  # pooled connections come back with the pragma
    turn = _writer_turn(engine.url.database)  # the one its make_engine took

    def checkpoint() -> None:
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            _busy, frames, _copied = cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if turn is not None and frames >= RESTART_FRAMES:
                turn.take()  # writers wait: RESTART_WAIT_MS at most, if a reader holds the old log
                try:
                    cursor.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
                    cursor.execute("PRAGMA wal_checkpoint(RESTART)")  # busy: the next round tries again
                finally:
                    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
                    turn.give()
        finally:
            raw.close()

    try:
        yield CHECKPOINT_SECONDS, checkpoint
    finally:
        with _upgrade_lock:
            _aside[engine] -= 1
            if not _aside[engine]:
                del _aside[engine]
                event.remove(engine, "connect", _no_autocheckpoint)
                engine.dispose()
        checkpoint()


class Leadership:
    """Which one of several server processes on a database does the work that one process
    should do for all (the periodic consensus refit): on PostgreSQL, the holder of a session
    advisory lock on a connection kept for the purpose; if its process dies, the connection
    goes and the next process to ask takes over. On SQLite every process leads (one writer at
    a time anyway, and one server process is the advised set-up)."""

    KEY = 0x6C6C6D6C  # "llml"; the second key is the schema's

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Any = None

    def held(self) -> bool:
        """Whether this process leads, taking the lead if nobody holds it."""
        if self.engine.dialect.name != "postgresql":
            return True
        if self._conn is None:
            conn = self.engine.raw_connection()
            cur = conn.cursor()
            # one lead per schema: several projects' databases may share one PostgreSQL database
            cur.execute("SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))", (self.KEY,))
            row = cur.fetchone()
            won = bool(row and row[0])
            conn.commit()  # the lock is the session's, not the transaction's
            if not won:
                conn.close()
                return False
            self._conn = conn
        return True

    def release(self) -> None:
        if self._conn is not None:
            self._conn.invalidate()  # closes the connection, and the lock with it
            self._conn = None


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: committed when the block ends, rolled back if it raises."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
