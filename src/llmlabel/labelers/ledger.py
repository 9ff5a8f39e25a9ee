"""The ledger of provider calls: cache, cost, budget, and the run's one database writer.

Every provider call becomes an ``LLMCall`` row right after the provider answers, in its own
short transaction, before the vote it leads to. That order is what makes a crash cheap: an
answer that reached the ledger is never paid for again (an identical request, same
``request_hash`` with outcome ``ok``, is answered from the ledger), so after ``kill -9`` the
only calls made twice are those that were in flight.

Writes go through one thread (``Writer``) that commits whatever has queued up in one
transaction (group commit): a caller still waits for its own row to be durable, but a hundred
concurrent callers share one commit, which keeps SQLite's single writer from becoming the
bottleneck and keeps the event loop free.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, cast, func, insert, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from llmlabel.errors import BudgetExceededError
from llmlabel.labelers.completion import Completion, CompletionRequest
from llmlabel.store.db import reader, session_scope
from llmlabel.store.tables import LLMCall, utcnow


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
                select(LLMCall.request_hash, cast(LLMCall.response, Text), LLMCall.latency_ms)
                .where(LLMCall.request_hash.in_(wanted[i:i + 500]), LLMCall.outcome == "ok")  # type: ignore[attr-defined]
                .order_by(LLMCall.id)  # type: ignore[arg-type]
            ).all()
            for h, response, latency in rows:
                if response is not None and response.lstrip().startswith("{"):
                    found[h] = Cached(response, float(latency or 0.0))
    return found


def spent(engine: Engine, run_id: str) -> float:
    """USD the run has spent so far, across every process and restart that used this run id."""
    with Session(reader(engine)) as session:
        total = session.execute(select(func.coalesce(func.sum(LLMCall.cost_usd), 0.0)).where(LLMCall.run_id == run_id)).scalar()
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
_INSERT_CALL = insert(LLMCall.__table__)  # type: ignore[attr-defined]
_STOP = object()


class _CallInsert:
    """The op that inserts one ledger row; the writer merges those of a batch into one statement."""

    __slots__ = ("values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values


class Writer:
    """One thread doing all of a run's writes, committing each batch of queued work at once."""

    def __init__(self, engine: Engine, max_batch: int = 512) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="llmlabel-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Op) -> asyncio.Future[Any]:
        """Run ``op(session)`` in the next transaction; the future resolves once committed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.put((op, loop, fut))
        return fut

    def record_call(self, row: CallRow) -> asyncio.Future[Any]:
        return self.submit(_CallInsert({**row.__dict__, "created_at": utcnow()}))

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[Any]) -> None:
        try:
            with session_scope(self.engine) as session:
                rows = [op.values for op, _, _ in batch if isinstance(op, _CallInsert)]
                if rows:  # the ledger rows of the batch in one statement
                    session.execute(_INSERT_CALL, rows)
                results = [None if isinstance(op, _CallInsert) else op(session) for op, _, _ in batch]
        except Exception:
            if len(batch) > 1:  # find the bad op: commit the others one by one
                for one in batch:
                    self._commit([one])
                return
            _, loop, fut = batch[0]
            exc = _current_exception()
            _notify(loop, fut, None, exc)
            return
        for (_, loop, fut), result in zip(batch, results, strict=True):
            _notify(loop, fut, result, None)


def _current_exception() -> BaseException:
    import sys

    exc = sys.exc_info()[1]
    assert exc is not None
    return exc


def _notify(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is gone (run torn down): nobody waits
        loop.call_soon_threadsafe(_settle, fut, result, exc)


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
