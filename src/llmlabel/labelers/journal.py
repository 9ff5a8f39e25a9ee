"""Answers made durable the moment they arrive, before the ledger has them.

A call keeps its concurrency slot until its answer cannot be lost, so that after ``kill -9``
the only calls paid for twice are those that were in flight. Waiting for the ledger row to
be committed took the writer thread and then the event loop's next turns to report back:
measured at concurrency 16, the slot stayed taken 51 ms (median; mean 94-96 ms) after the
answer arrived, while the provider's limit sat partly idle. A line appended to a file takes
28 us on the event loop (a 4.7 kB answer, measured) and outlives the process (the kernel
holds it). The writer still commits every row to the ledger; a run's journal is removed when
the run ends, and the next run to start moves what a dead process's journal holds into the
ledger.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from llmlabel.labelers.ledger import insert_call_rows, lookup
from llmlabel.store.db import session_scope


def journal_dir(engine: Engine) -> Path:
    """Beside a SQLite file (it moves with the database); for a server database, a directory
    per database in the machine's temporary directory (a process on another machine cannot
    recover this one's answers: they are asked again)."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        db = Path(url.database).resolve()
        return db.with_name(db.name + ".answers")
    key = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "llmlabel-answers" / key


def _encode(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot journal a {type(value).__name__}")


ROTATE_BYTES = 64 << 20


class Journal:
    """This process's answers not yet known to be in the ledger, one JSON line each.

    Written to a file of ``rotate_bytes`` at most, then to a new one: a file whose rows the
    writer has all committed is deleted (``committed``), so a long run keeps a few files,
    not a copy of every answer it was given."""

    def __init__(self, directory: Path, rotate_bytes: int = ROTATE_BYTES) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.rotate_bytes = directory, rotate_bytes
        self._appended = 0  # rows written so far, in the order the writer commits them
        self._sealed: list[tuple[Path, int]] = []  # full files, with the row count at their end
        self._lock = threading.Lock()  # committed() runs on the writer's thread
        self._open()

    def _open(self) -> None:
        self.path = self.directory / f"{os.getpid()}-{time.time_ns()}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = 0

    def append(self, row: dict[str, Any]) -> None:
        """Write a ledger row (as the writer inserts it) in one system call."""
        line = (json.dumps(row, default=_encode) + "\n").encode()
        os.write(self._fd, line)
        self._appended += 1
        self._size += len(line)
        if self._size >= self.rotate_bytes:
            os.close(self._fd)
            with self._lock:
                self._sealed.append((self.path, self._appended))
            self._open()

    def committed(self, rows: int) -> None:
        """The writer has committed the first ``rows`` rows written here: delete the full
        files that hold only those."""
        with self._lock:
            done = [path for path, end in self._sealed if end <= rows]
            self._sealed = [(path, end) for path, end in self._sealed if end > rows]
        for path in done:
            path.unlink(missing_ok=True)

    def close(self, *, keep: bool) -> None:
        """``keep``: some rows may not have reached the ledger (a write failed); the next run
        moves them there."""
        os.close(self._fd)
        if not keep:
            for path in [path for path, _ in self._sealed] + [self.path]:
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # another process's journal is still there
                self.directory.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def recover(engine: Engine, directory: Path) -> int:
    """Move the answers in dead processes' journals into the ledger (those it lacks); returns
    how many rows were added. A journal is claimed by renaming it to a journal of this process,
    so two runs starting at once do not both insert it, and one that dies while recovering
    leaves it for the next run; a line cut short by the kill is skipped."""
    if not directory.is_dir():
        return 0
    added = 0
    for path in sorted(directory.glob("*.jsonl")):
        pid = path.name.split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        claimed = path.with_name(f"{os.getpid()}-{time.time_ns()}.jsonl")
        try:
            path.rename(claimed)
        except FileNotFoundError:  # another run claimed it first
            continue
        rows = []
        for line in claimed.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            row["created_at"] = datetime.fromisoformat(row["created_at"])
            rows.append(row)
        known = lookup(engine, [r["request_hash"] for r in rows])
        new = [r for r in rows if r["request_hash"] not in known]
        if new:
            with session_scope(engine) as session:
                insert_call_rows(session, new)
        added += len(new)
        claimed.unlink()
    return added
