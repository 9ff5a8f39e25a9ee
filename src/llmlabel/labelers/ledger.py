"""The ledger of provider calls: cache, cost, budget, and the run's one database writer.

Every provider call becomes an ``LLMCall`` row as soon as the provider answers, committed
before or with the vote it leads to. That order is what makes a crash cheap: an answer that
reached the ledger is never paid for again (an identical request, same ``request_hash`` with
outcome ``ok``, is answered from the ledger). A call keeps its concurrency slot until its row
is durable (``labelers.journal``), so after ``kill -9`` the only calls made twice are those
that were in flight.

Writes go through one thread (``Writer``) that commits whatever has queued up in one
transaction (group commit): a hundred concurrent callers share one commit, which keeps
SQLite's single writer from becoming the bottleneck and keeps the event loop free.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Text, bindparam, cast, func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col

from llmlabel.errors import BudgetExceededError
from llmlabel.labelers.completion import Completion, CompletionRequest
from llmlabel.store import leases
from llmlabel.store.db import reader, session_scope
from llmlabel.store.prepared import Prepared, dialect_name
from llmlabel.store.tables import LLMCall, utcnow
from llmlabel.votes import NewVote, record_votes

if TYPE_CHECKING:
    from llmlabel.labelers.journal import Journal


def request_hash(request: CompletionRequest, scope: str = "") -> str:
    """Identifies a request within a ``scope`` (the labeler): two labelers configured alike still
    draw their own answers (their own samples at temperature > 0), so they stay two voters."""
    body = json.dumps({"scope": scope, **request.identity()}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class Cached:
    """An answer from the ledger, still in its JSON text: decoded when its item is labeled, so
    a batch of hits waiting in the queue is a few strings, not thousands of small objects that
    outlive the young generation and make the garbage collector walk the whole heap."""

    response: str
    latency_ms: float

    def completion(self) -> Completion:
        completion = Completion.from_dict(json.loads(self.response))
        completion.latency_ms = self.latency_ms
        return completion


def lookup(engine: Engine, hashes: Iterable[str]) -> dict[str, Cached]:
    """Answers already paid for: the newest ``ok`` ledger row of each request hash."""
    wanted = sorted(set(hashes))
    found: dict[str, Cached] = {}
    with Session(reader(engine)) as session:
        for i in range(0, len(wanted), 500):
            rows = session.execute(
                select(col(LLMCall.request_hash), cast(col(LLMCall.response), Text), col(LLMCall.latency_ms))
                .where(col(LLMCall.request_hash).in_(wanted[i:i + 500]), col(LLMCall.outcome) == "ok")
                .order_by(col(LLMCall.id))
            ).all()
            for h, response, latency in rows:
                if response is not None and response.lstrip().startswith("{"):
                    found[h] = Cached(response, float(latency or 0.0))
    return found


def spent(engine: Engine, run_id: str) -> float:
    """USD the run has spent so far, across every process and restart that used this run id."""
    with Session(reader(engine)) as session:
        total = session.execute(select(func.coalesce(func.sum(LLMCall.cost_usd), 0.0)).where(col(LLMCall.run_id) == run_id)).scalar()
    return float(total or 0.0)


class Budget:
    """A USD cap for a run. Checked before each new call; in-flight calls may overshoot it by
    at most their own cost (they were admitted while the budget still had room)."""

    def __init__(self, limit: float | None, already_spent: float = 0.0) -> None:
        self.limit = limit
        self.spent = already_spent

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.spent >= self.limit

    def check(self) -> None:
        if self.exhausted:
            raise BudgetExceededError(
                f"the run's budget of ${self.limit:.4f} is spent (${self.spent:.4f}); raise --budget "
                "or policy.budget_usd, or start a new run with --run-id"
            )

    def add(self, cost: float) -> None:
        self.spent += cost


@dataclass
class CallRow:
    """One ledger row, as plain data until the writer inserts it."""

    project_id: int
    labeler: str
    model: str
    prompt_version: str
    request_hash: str
    run_id: str
    outcome: str
    error: str | None = None
    response: dict[str, Any] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0


Op = Callable[[Session], Any]
_STOP = object()


def _insert_call(dialect: str) -> Any:
    """The ledger's insert, its ``response`` bound as JSON text already: the column's own type
    would encode it again. SQLite stores JSON as that text; PostgreSQL casts it."""
    text = bindparam("response", type_=Text)
    return insert(LLMCall.__table__).values(response=text if dialect == "sqlite" else cast(text, JSON))  # type: ignore[attr-defined]


_INSERT_CALLS = {name: Prepared(_insert_call(name)) for name in ("sqlite", "postgresql")}  # built once


def insert_call_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert ledger rows as ``Writer.record_call`` makes them (the response as JSON text)."""
    _INSERT_CALLS[dialect_name(session)].run_many(session, rows)


class _SQLiteRows:
    """A batch of ledger rows on SQLite as one multi-row INSERT, run outside a transaction: a
    single statement is its own transaction, and takes the write lock before it reads.

    Why: each call into the driver gives up the GIL and, while the event loop is busy, waits
    up to the 5 ms switch interval to get it back. BEGIN, a step per row and COMMIT made a
    commit of three rows some ten such calls, ~9 ms during which those calls kept their
    concurrency slots; one statement makes it two or three (measured at concurrency 16: 5 ms
    a commit, 27 instead of 33 ms from the answer to its slot given back)."""

    def __init__(self, engine: Engine, columns: list[str]) -> None:
        dialect = engine.dialect
        compiled = _insert_call(dialect.name).compile(dialect=dialect, column_keys=columns)
        self.engine, self.columns = engine, columns
        self.head, self.values = compiled.string.split(" VALUES ")
        self.names = list(compiled.positiontup or ())
        self.processors = [compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in self.names]
        self.per_statement = 999 // len(self.names)  # SQLite before 3.32 takes 999 parameters at most
        self._sql: dict[int, str] = {}

    def insert(self, rows: list[dict[str, Any]]) -> None:
        conn = self.engine.raw_connection()
        try:
            for i in range(0, len(rows), self.per_statement):
                chunk = rows[i:i + self.per_statement]
                sql = self._sql.get(len(chunk))
                if sql is None:
                    sql = self._sql[len(chunk)] = f"{self.head} VALUES {', '.join([self.values] * len(chunk))}"
                params = [p(row[n]) if p else row[n] for row in chunk for n, p in zip(self.names, self.processors, strict=True)]
                try:
                    conn.driver_connection.execute(sql, params)  # type: ignore[union-attr]
                except self.engine.dialect.loaded_dbapi.Error as exc:  # as SQLAlchemy raises it: IntegrityError, …
                    raise DBAPIError.instance(sql, params, exc, self.engine.dialect.loaded_dbapi.Error) from exc
        finally:
            conn.close()


class _Op:
    """Work whose caller awaits the result; a ``barrier`` (a flush) also waits for the held votes."""

    __slots__ = ("barrier", "fn", "fut", "loop")

    def __init__(self, fn: Op, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], barrier: bool = False) -> None:
        self.fn, self.loop, self.fut, self.barrier = fn, loop, fut, barrier


class _Call:
    """A ledger row; ``done`` runs on ``loop`` once the row is committed (or failed to be)."""

    __slots__ = ("done", "journaled", "loop", "values")

    def __init__(self, values: dict[str, Any], loop: asyncio.AbstractEventLoop | None,
                 done: Callable[[], Any] | None, journaled: bool = False) -> None:
        self.values, self.loop, self.done, self.journaled = values, loop, done, journaled


class _Vote:
    """A vote, and the lease it finishes: nobody waits for it (``flush`` does)."""

    __slots__ = ("lease_id", "project_id", "vote")

    def __init__(self, project_id: int, vote: NewVote, lease_id: int) -> None:
        self.project_id, self.vote, self.lease_id = project_id, vote, lease_id


class Writer:
    """One thread doing all of a run's writes, committing each batch of queued work at once.

    Three kinds of writes: ``submit`` (an op whose result a caller awaits: claims, releases),
    ``record_call`` (a ledger row; its ``done`` callback, e.g. giving back the call's
    concurrency slot, runs once the row is durable) and ``record_vote`` (a vote with the lease
    it finishes). The writer merges what a batch holds: its ledger rows in one statement, its
    votes in one ``record_votes`` and one lease update. Votes also wait up to ``vote_delay``
    seconds for others (``vote_batch`` of them go at once), and only a ``flush`` or ``close``
    cuts that short, not the other ops (claims, releases: a held vote's lease is still active,
    so no claim offers its item again). Nothing waits for votes, and a commit of votes costs
    little more for a hundred than for ten (three statements): in a live run at concurrency 16,
    with claims flushing them and 50 ms of waiting, votes went out ~13 at a time, 340 commits
    for 4,000 votes, half the writer's CPU (now ~65 commits, 0.3 s instead of 1.2 s). A
    crash loses at most the waiting votes, whose answers are in the ledger already: the next
    run turns them into votes without a call. A write nobody awaits that fails is raised by
    the next ``check``, ``flush`` or ``close``."""

    def __init__(self, engine: Engine, max_batch: int = 512, *, vote_batch: int = 256, vote_delay: float = 0.5,
                 journal: Journal | None = None) -> None:
        self.engine = engine
        self.journal = journal
        self._journaled = 0  # journaled rows committed (the writer thread's count)
        self._sqlite_rows = _SQLiteRows(engine, [*CallRow.__dataclass_fields__, "created_at"]) if engine.dialect.name == "sqlite" else None
        self.max_batch = max_batch
        self.vote_batch, self.vote_delay = vote_batch, vote_delay
        self.error: BaseException | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="llmlabel-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Op, *, barrier: bool = False) -> asyncio.Future[Any]:
        """Run ``op(session)`` in the next transaction; the future resolves once committed.
        With ``barrier``, the votes handed over before it are committed with it, not after."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if not self._thread.is_alive():  # closed, or died: nobody would ever answer
            fut.set_exception(self.error or RuntimeError("the run's database writer has stopped"))
        else:
            self._queue.put(_Op(op, loop, fut, barrier))
        return fut

    def record_call(self, row: CallRow, done: Callable[[], Any] | None = None) -> None:
        """Insert a ledger row; ``done()`` runs on the caller's loop once it cannot be lost:
        at once for an answer written to the run's journal, else once it is committed.

        The response is encoded to JSON text here, at once: what waits in the queue is one
        string, while the answer's objects (a few dozen small dicts and lists per call, its
        logprobs) die with the step that turned them into a vote. Left in the queue until the
        commit, they outlived young collections and set off most of those llmlabel adds to
        litellm's own (measured, provider stubbed out: 376 per 4,000 calls before, 124 after)."""
        values = {**row.__dict__, "created_at": utcnow()}
        if row.response is not None:
            values["response"] = json.dumps(row.response)
        journaled = False
        if done is not None and self.journal is not None and row.outcome == "ok":
            try:
                self.journal.append(values)
            except OSError:  # a full disk, say: this answer is durable once committed, as before
                pass
            else:
                done()
                done, journaled = None, True
        loop = asyncio.get_running_loop() if done is not None else None
        self._queue.put(_Call(values, loop, done, journaled))

    def record_vote(self, *, project_id: int, vote: NewVote, lease_id: int) -> None:
        """Record a vote and finish its lease, in one transaction, soon."""
        self._queue.put(_Vote(project_id, vote, lease_id))

    def check(self) -> None:
        """Raise the first failure of a write nobody awaited."""
        if self.error is not None:
            raise self.error

    async def flush(self) -> None:
        """Wait until everything handed over so far is committed; raise if any of it failed."""
        await self.submit(lambda session: None, barrier=True)
        self.check()

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()
        if self.journal is not None:  # every row committed, unless a write failed
            self.journal.close(keep=self.error is not None)
        self.check()

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug here must fail the run, not leave it waiting forever
            self.error = self.error or exc
            rest = []
            with contextlib.suppress(queue.Empty):
                while True:
                    rest.append(self._queue.get_nowait())
            rest = [e for e in rest if e is not _STOP]
            _notify(rest, [self.error] * len(rest))
            raise

    def _loop(self) -> None:
        held: list[_Vote] = []  # votes waiting for others
        since = 0.0
        while True:
            timeout = None if not held else max(0.0, since + self.vote_delay - time.monotonic())
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                first = None
            batch: list[Any] = []
            stop = first is _STOP
            if first is not None and not stop:
                batch.append(first)
            while not stop and len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            votes = [e for e in batch if type(e) is _Vote]
            if votes:
                if not held:
                    since = time.monotonic()
                held += votes
                batch = [e for e in batch if type(e) is not _Vote]
            # the votes go when they have waited long enough, are many, or someone waits for all
            if held and (stop or len(held) >= self.vote_batch or time.monotonic() >= since + self.vote_delay
                         or any(type(e) is _Op and e.barrier for e in batch)):
                batch = held + batch  # before the ops: a flush behind them sees them committed
                held = []
            if batch:
                self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[Any]) -> None:
        try:
            if self._sqlite_rows is not None and all(type(e) is _Call for e in batch):
                self._sqlite_rows.insert([e.values for e in batch])
                results: list[Any] = [None] * len(batch)
            else:
                results = self._transaction(batch)
        except Exception as exc:
            if len(batch) > 1:  # find the bad write: commit the others one by one
                for one in batch:
                    self._commit([one])
                return
            if type(batch[0]) is not _Op and self.error is None:
                self.error = exc
            _notify(batch, [exc])
            return
        if self.journal is not None and self.error is None:  # rows commit in the order written
            self._journaled += sum(1 for e in batch if type(e) is _Call and e.journaled)
            self.journal.committed(self._journaled)
        _notify(batch, results)

    def _transaction(self, batch: list[Any]) -> list[Any]:
        """The batch's writes in one transaction; each op's result."""
        with session_scope(self.engine) as session:
            rows = [e.values for e in batch if type(e) is _Call]
            if rows:  # the ledger rows of the batch in one driver call
                insert_call_rows(session, rows)
            votes = [e for e in batch if type(e) is _Vote]
            for project_id in {v.project_id for v in votes}:  # one project in practice
                mine = [v for v in votes if v.project_id == project_id]
                record_votes(session, project_id=project_id, votes=[v.vote for v in mine])
                leases.finish(session, lease_ids=[v.lease_id for v in mine])
            return [e.fn(session) if type(e) is _Op else None for e in batch]


def _notify(batch: list[Any], results: list[Any]) -> None:
    """Tell each waiting loop, once per batch, what became of its writes (``results`` holds the
    error alone when the batch is one failed write)."""
    per_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any]]] = {}
    for entry, result in zip(batch, results, strict=True):
        loop = entry.loop if type(entry) is _Op or type(entry) is _Call else None
        if loop is not None:
            per_loop.setdefault(loop, []).append((entry, result))
    for loop, done in per_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is gone (run torn down): nobody waits
            loop.call_soon_threadsafe(_settle, done)


def _settle(done: list[tuple[Any, Any]]) -> None:
    for entry, result in done:
        if type(entry) is _Call:
            if entry.done is not None:
                entry.done()
        elif not entry.fut.done():
            if isinstance(result, BaseException):
                entry.fut.set_exception(result)
            else:
                entry.fut.set_result(result)
