"""Many labelers over many items, concurrently, resumable, shareable between processes.

Each labeler runs as a producer and ``concurrency`` workers. The producer claims items in
small batches through the same leases human tasks use (``store.leases.claim(human=False)``), so
several ``llmlabel label`` processes split the work and a dead process's items come back when
its leases expire. Each claim walks on from the last item claimed, and once more from the top
when that finds nothing (``store.leases.claim``'s ``after``). The producer renders each item's
first request and looks all of a batch's request hashes up in the ledger at once, so a resumed
or repeated run answers them without a call. When a whole batch was answered from the ledger,
the next claim is larger (a re-run goes at the database's pace, not the provider's). Workers
turn items into votes and hand them to the run's single writer thread, which writes them in
batches, each vote with its lease's end, in one transaction. All of a run's writes (claims,
ledger rows, votes, releases) go through that thread: on SQLite, writers on several
connections of one process would queue on the file lock through SQLite's sleeping busy
handler, which costs far more than the writes.

Stopping early (budget spent, a labeler's key rejected, Ctrl-C) releases the unstarted
leases at once, so the items are immediately available to the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from llmlabel.config import LabelerConfig, ProjectConfig
from llmlabel.errors import BudgetExceededError, ProviderError
from llmlabel.labelers.completion import Completer
from llmlabel.labelers.journal import Journal, journal_dir, recover
from llmlabel.labelers.ledger import Budget, Writer, lookup, spent
from llmlabel.labelers.limits import Limits
from llmlabel.labelers.llm import Endpoint, ItemFailed, LLMLabeler, Work
from llmlabel.labelers.prompts import FewShot, Prompter
from llmlabel.projects import get_or_create_voter
from llmlabel.store import leases
from llmlabel.store.db import reader
from llmlabel.store.tables import Gold, Item
from llmlabel.votes import NewVote

CACHED_BATCH = 1024  # items per claim once the ledger answers whole batches


@dataclass
class LabelerStats:
    name: str
    items: int = 0
    votes: int = 0
    abstentions: int = 0
    failed: int = 0
    calls: int = 0
    cache_hits: int = 0
    cost_usd: float = 0.0
    stopped: str | None = None


@dataclass
class RunReport:
    run_id: str
    labelers: list[LabelerStats]
    seconds: float = 0.0
    spent_usd: float = 0.0
    budget_usd: float | None = None
    budget_reached: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def votes(self) -> int:
        return sum(s.votes for s in self.labelers)

    @property
    def items_per_second(self) -> float:
        items = max((s.items for s in self.labelers), default=0)
        return items / self.seconds if self.seconds > 0 else 0.0


@dataclass
class LabelerSpec:
    """A configured labeler bound to where its calls go and what answers them."""

    config: LabelerConfig
    endpoint: Endpoint
    completer: Completer


Progress = Callable[[LabelerStats], None]


def default_run_id(config: ProjectConfig) -> str:
    """Same project and same config → same run (so a restart keeps the budget it has spent)."""
    return f"{config.name}-{config.content_hash()[:12]}"[:64]


def _load_gold(engine: Engine, project_id: int) -> list[tuple[int, dict[str, Any], Any]]:
    with Session(reader(engine)) as session:
        rows = session.execute(
            select(col(Gold.item_id), col(Item.fields), col(Gold.label)).join(Item, col(Item.id) == Gold.item_id)
            .where(col(Gold.project_id) == project_id, col(Gold.split) == "dev").order_by(col(Gold.item_id))
        ).all()
    return [(int(i), dict(f), lab) for i, f, lab in rows]


Cursor = tuple[float, int]  # (priority, id) of the last item a labeler claimed


def _claim(project_id: int, voter_id: int, limit: int, lease_seconds: int,
           after: Cursor | None) -> Callable[[Session], Any]:
    def op(session: Session) -> tuple[list[tuple[int, int, dict[str, Any]]], Cursor | None]:
        claims = leases.claim(session, project_id=project_id, voter_id=voter_id, human=False,
                              limit=limit, lease_seconds=lease_seconds, after=after)
        if not claims:
            return [], None
        found = {i: (fields, priority) for i, fields, priority in session.execute(
            select(col(Item.id), col(Item.fields), col(Item.priority)).where(col(Item.id).in_([c.item_id for c in claims]))
        ).all()}
        last = claims[-1].item_id  # claims come in queue order
        return [(c.item_id, c.lease_id, found[c.item_id][0]) for c in claims], (float(found[last][1]), last)

    return op


def _release(lease_ids: list[int]) -> Callable[[Session], Any]:
    return lambda session: leases.release(session, lease_ids=lease_ids)


YOUNG_THRESHOLD = 10_000  # the collector's first threshold during a run (Python's default: 700)
_tuning = threading.Lock()
_runs = 0
_saved_thresholds: tuple[int, int, int] = gc.get_threshold()


@contextlib.contextmanager
def _collector_for_a_run() -> Iterator[None]:
    """What the process holds at the start frozen, and young collections rarer, for a run.

    A run allocates fast (every provider call builds responses, log payloads, pydantic
    models). Frozen: the oldest generation, which runs ~20 times per 4,000 calls, no longer
    walks everything the process held before the run (50,000-70,000 objects in the throughput
    bench: 1.2-1.5 s of such a run's CPU at concurrency 64, 0.3-0.6 s frozen). One collection
    first (5-7 ms there), so that only what is alive is frozen; litellm's import freezes its
    ~350k objects too (``completion._litellm``). The cost: a cycle among those objects that the
    caller drops later is not reclaimed until ``gc.unfreeze``.

    Rarer young collections: each of the ~2,000 per 4,000 calls at Python's default threshold
    walks the young objects of every call in flight, which the next one walks again. At 10,000
    the collections took 0.5 s of such a run's CPU instead of 1.5-2.2 s (measured with
    ``gc.callbacks``, concurrency 16), a 14 ms pause each. The thresholds are the process's:
    overlapping runs keep them raised until the last one ends."""
    global _runs, _saved_thresholds
    gc.collect()
    gc.freeze()
    with _tuning:
        if _runs == 0:
            _saved_thresholds = gc.get_threshold()
            gc.set_threshold(max(YOUNG_THRESHOLD, _saved_thresholds[0]), *_saved_thresholds[1:])
        _runs += 1
    try:
        yield
    finally:
        with _tuning:
            _runs -= 1
            if _runs == 0:
                gc.set_threshold(*_saved_thresholds)


class Run:
    """One ``llmlabel label`` run over a project's pending items."""

    def __init__(
        self, *, engine: Engine, config: ProjectConfig, project_id: int, specs: Sequence[LabelerSpec],
        run_id: str | None = None, budget_usd: float | None = None, limit: int | None = None,
        project_dir: Path | None = None, progress: Progress | None = None,
    ) -> None:
        self.engine, self.config, self.project_id, self.specs = engine, config, project_id, list(specs)
        self.run_id = run_id or default_run_id(config)
        self.budget_usd = budget_usd if budget_usd is not None else config.policy.budget_usd
        self.limit, self.project_dir, self.progress = limit, project_dir, progress
        self.lease_seconds = config.policy.lease_seconds

    async def run(self) -> RunReport:
        """Label, with the garbage collector tuned for the run (``_collector_for_a_run``)."""
        started = time.perf_counter()
        with _collector_for_a_run():
            answers = journal_dir(self.engine)
            await asyncio.to_thread(recover, self.engine, answers)  # what a killed run had paid for
            budget = Budget(self.budget_usd, await asyncio.to_thread(spent, self.engine, self.run_id))
            report = RunReport(run_id=self.run_id, labelers=[], budget_usd=self.budget_usd)
            gold = await asyncio.to_thread(_load_gold, self.engine, self.project_id)
            writer = Writer(self.engine, journal=Journal(answers))
            try:
                tasks = [self._labeler(spec, budget, writer, gold, report) for spec in self.specs]
                await asyncio.gather(*tasks)
            finally:
                await asyncio.to_thread(writer.close)
        report.seconds = time.perf_counter() - started
        report.spent_usd = budget.spent
        report.budget_reached = budget.exhausted
        return report

    async def _labeler(self, spec: LabelerSpec, budget: Budget, writer: Writer,
                       gold: list[tuple[int, dict[str, Any], Any]], report: RunReport) -> None:
        cfg = spec.config
        stats = LabelerStats(cfg.name)
        report.labelers.append(stats)
        voter_id: int = await writer.submit(
            lambda s: get_or_create_voter(s, project_id=self.project_id, name=cfg.name, kind=cfg.kind).id
        )
        prompter = Prompter(self.config, cfg, self.project_dir)
        labeler = LLMLabeler(
            self.config, cfg, endpoint=spec.endpoint, completer=spec.completer, prompter=prompter,
            few_shot=FewShot(prompter, gold if cfg.few_shot.count else []), writer=writer, budget=budget,
            limits=Limits(concurrency=cfg.concurrency, rpm=cfg.requests_per_minute, tpm=cfg.tokens_per_minute),
            project_id=self.project_id, run_id=self.run_id,
        )
        work: asyncio.Queue[Work | None] = asyncio.Queue(maxsize=cfg.concurrency * 2)
        stop = asyncio.Event()
        consecutive_failures = 0
        mine: set[int] = set()  # items this process holds: a lease of ours that lapsed while the
        # item waited in the queue comes back from claim(), and must not be asked twice

        async def produce() -> None:
            claimed = 0
            # A leased item starts soon after its claim, but not so small a batch that claims and
            # ledger look-ups cost more than the labeling: each claim walks the items claimed before
            # it (at concurrency 16, batches of 32 took 0.45 s of the writer per 4,000 calls, of 64
            # 0.23 s). 64 items are under a minute's work even for the local model.
            small = max(64, min(cfg.concurrency * 2, 256))
            batch = small
            cursor: Cursor | None = None  # claims walk on from the last item claimed
            while not stop.is_set() and (self.limit is None or claimed < self.limit):
                n = batch if self.limit is None else min(batch, self.limit - claimed)
                rows, after = await writer.submit(_claim(self.project_id, voter_id, n, self.lease_seconds, cursor))
                if not rows and cursor is not None:
                    cursor = None  # once more from the top, for what the cursor passed
                    continue
                if not rows:
                    break
                cursor = after
                rows = [r for r in rows if r[0] not in mine]
                mine.update(r[0] for r in rows)
                claimed += len(rows)
                units = [labeler.prepare(item_id, lease_id, fields) for item_id, lease_id, fields in rows]
                hits = await asyncio.to_thread(lookup, self.engine, [u.hash for u in units])
                # all answered already: take more at once next time; else back to small batches
                batch = min(batch * 4, CACHED_BATCH) if units and len(hits) == len(units) else small
                for u in units:
                    u.cached = hits.get(u.hash)
                    await work.put(u)
            for _ in range(cfg.concurrency):
                await work.put(None)

        def halt(reason: str) -> None:
            if stats.stopped is None:
                stats.stopped = reason
                report.errors.append(f"{cfg.name}: {reason}")
            stop.set()

        async def consume() -> None:
            while (unit := await work.get()) is not None:
                try:
                    await one(unit)
                finally:
                    mine.discard(unit.item_id)

        async def one(unit: Work) -> None:
            nonlocal consecutive_failures
            if stop.is_set():
                await writer.submit(_release([unit.lease_id]))
                return
            try:
                vote, tally = await labeler.label(unit)
            except BudgetExceededError as exc:
                halt(str(exc))
                await writer.submit(_release([unit.lease_id]))
                return
            except ProviderError as exc:
                halt(str(exc))
                await writer.submit(_release([unit.lease_id]))
                return
            except ItemFailed as exc:
                stats.failed += 1
                consecutive_failures += 1
                await writer.submit(_release([unit.lease_id]))
                if consecutive_failures >= 5:
                    halt(f"stopped after {consecutive_failures} items in a row failed; last: {exc}")
                return
            consecutive_failures = 0
            stats.items += 1
            stats.votes += 1
            stats.abstentions += vote.label is None
            stats.calls += tally.calls
            stats.cache_hits += tally.cache_hits
            stats.cost_usd += tally.cost
            writer.record_vote(project_id=self.project_id, vote=NewVote(unit.item_id, voter_id, vote),
                               lease_id=unit.lease_id)
            if self.progress is not None:
                self.progress(stats)

        try:
            await asyncio.gather(produce(), *(consume() for _ in range(cfg.concurrency)))
        finally:
            await writer.flush()  # this labeler's votes are committed (or the failure raised)
