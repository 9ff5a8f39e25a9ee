"""SQLite writers take turns through a lock file beside the database: held from BEGIN IMMEDIATE
to COMMIT or ROLLBACK, never by readers, and a wait that outlasts the busy timeout fails with
its reason instead of hanging. A server's side checkpoints take the turn to start the WAL over,
so it stays bounded under steady writes."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from llmlabel.errors import StorageError
from llmlabel.store import db
from llmlabel.store.db import make_engine, reader, session_scope, upkeep_aside


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[tuple[Engine, Path]]:
    path = tmp_path / "turn.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (a INTEGER)"))
    yield engine, Path(f"{path}-writer")
    engine.dispose()


def turn_is_free(lock_file: Path) -> bool:
    """Whether another writer could take the turn now (a separate open file: flock tells)."""
    fd = os.open(lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops the lock if it was taken
    return True


def rows(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [a for (a,) in conn.execute(text("SELECT a FROM t ORDER BY a"))]


def test_a_write_transaction_holds_the_turn_until_it_commits_or_rolls_back(sqlite: tuple[Engine, Path]) -> None:
    engine, lock_file = sqlite
    assert turn_is_free(lock_file)
    with session_scope(engine) as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
        assert not turn_is_free(lock_file)
    assert turn_is_free(lock_file)
    with pytest.raises(ZeroDivisionError), session_scope(engine) as session:
        session.execute(text("INSERT INTO t VALUES (2)"))
        assert not turn_is_free(lock_file)
        1 / 0  # noqa: B018
    assert turn_is_free(lock_file)
    assert rows(engine) == [1]  # committed once, rolled back once


def test_readers_do_not_take_the_turn(sqlite: tuple[Engine, Path]) -> None:
    engine, lock_file = sqlite
    with session_scope(reader(engine)) as session:
        assert session.execute(text("SELECT count(*) FROM t")).scalar() == 0
        assert turn_is_free(lock_file)


def test_a_connection_returned_mid_transaction_gives_the_turn_back(sqlite: tuple[Engine, Path]) -> None:
    engine, lock_file = sqlite
    conn = engine.connect()
    conn.begin()
    conn.execute(text("INSERT INTO t VALUES (1)"))
    assert not turn_is_free(lock_file)
    conn.invalidate()  # the pool discards it: the transaction and the turn go with it
    assert turn_is_free(lock_file)
    assert rows(engine) == []


def test_a_writer_waits_for_another_process_and_goes_when_it_is_done(sqlite: tuple[Engine, Path], tmp_path: Path) -> None:
    engine, lock_file = sqlite
    holder = subprocess.Popen(  # holds the turn, as another llmlabel process's write transaction would
        [sys.executable, "-c",
         "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); "
         "print('held', flush=True); sys.stdin.readline()", str(lock_file)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "held"
        wrote = threading.Event()

        def write() -> None:
            with session_scope(engine) as session:
                session.execute(text("INSERT INTO t VALUES (7)"))
            wrote.set()

        writer = threading.Thread(target=write)
        writer.start()
        assert not wrote.wait(0.3)  # waiting for its turn
        holder.stdin.write("done\n")
        holder.stdin.flush()
        writer.join(10)
        assert wrote.is_set()
    finally:
        holder.kill()
        holder.wait()
    assert rows(engine) == [7]


def test_a_wait_past_the_busy_timeout_fails_with_its_reason_and_loses_nothing(
    sqlite: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, lock_file = sqlite
    monkeypatch.setattr(db, "BUSY_SECONDS", 0.2)
    fd = os.open(lock_file, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a stopped process holding the turn
    try:
        with pytest.raises(StorageError, match="stayed locked for writing by another process"), \
                session_scope(engine) as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        os.close(fd)
    with session_scope(engine) as session:  # the turn was not left taken by the failed attempt
        session.execute(text("INSERT INTO t VALUES (2)"))
    assert rows(engine) == [2]


def test_a_servers_checkpoints_keep_the_wal_bounded_under_steady_writes_and_reads(
    sqlite: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checkpoints that never wait for writers end a few commits behind, and with readers about
    the log was never started over: 18 MB here (and 2 GB a minute under the load bench)."""
    engine, lock_file = sqlite
    wal = Path(str(lock_file).removesuffix("-writer") + "-wal")
    monkeypatch.setattr(db, "RESTART_FRAMES", 500)  # 2 MB of 4 KB pages
    done = threading.Event()

    def write() -> None:
        for i in range(1500):  # ~3 KB a commit: 4.5 MB of rows, more in pages
            with session_scope(engine) as session:
                session.execute(text("INSERT INTO t VALUES (randomblob(3000 + :i))"), {"i": i})
        done.set()

    def read() -> None:
        while not done.is_set():
            with session_scope(reader(engine)) as session:
                session.execute(text("SELECT count(*) FROM t")).scalar()
            time.sleep(0.002)

    peak = 0
    with upkeep_aside(engine) as (_seconds, checkpoint):
        threads = [threading.Thread(target=write), threading.Thread(target=read)]
        for thread in threads:
            thread.start()
        while not done.is_set():
            checkpoint()
            peak = max(peak, wal.stat().st_size)
            time.sleep(0.01)
        for thread in threads:
            thread.join()
    assert len(rows(engine)) == 1500
    assert peak < 10_000_000, f"the WAL reached {peak / 1e6:.1f} MB"
