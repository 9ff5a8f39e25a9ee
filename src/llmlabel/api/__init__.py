"""The HTTP API: an app factory over an engine and settings; routers hold no logic."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from sqlalchemy.engine import Engine

from llmlabel import decisions
from llmlabel.api import errors
from llmlabel.api.deferred import ApplyDeferred
from llmlabel.api.deps import ApiSettings
from llmlabel.api.limits import BodySizeLimit
from llmlabel.api.routes import batches, items, projects, quality, review, tasks, tokens
from llmlabel.api.serialize import SerializeRequests
from llmlabel.callbacks import deliver_due
from llmlabel.store.db import Leadership, upkeep_aside
from llmlabel.web import pages

log = logging.getLogger("llmlabel.api")


def _lifespan(
    engine: Engine, settings: ApiSettings, write_lock: contextlib.AbstractAsyncContextManager[Any],
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """Background work of a server: re-deciding voted items in batches, delivering due
    callbacks, refitting consensus for the projects that received votes since the last round,
    and keeping the database fit: on SQLite checkpointing the WAL beside the requests, on
    PostgreSQL analyzing tables whose statistics went stale."""

    async def decide_forever() -> None:
        while True:
            await asyncio.sleep(settings.decision_batch_seconds)
            if decisions.has_deferred(engine):
                try:
                    async with write_lock:  # on SQLite, in turn with the requests
                        decisions.apply_deferred(engine)
                except Exception:  # the items wait for the next round; the periodic refit backs it up
                    log.exception("batched re-decision failed")

    async def refit_forever() -> None:
        last_vote: dict[int, int] = {}
        leader = Leadership(engine)  # several workers: one refits for all
        try:
            while True:
                await asyncio.sleep(settings.refit_interval_seconds)
                try:
                    if await asyncio.to_thread(leader.held):
                        url = engine.url.render_as_string(hide_password=False)
                        last_vote = await asyncio.get_running_loop().run_in_executor(
                            decisions.fitter(), decisions.refit_changed_elsewhere, url, last_vote)
                except Exception:  # a failed round is retried at the next one
                    log.exception("periodic consensus refit failed")
        finally:
            leader.release()

    async def deliver_forever() -> None:
        while True:
            try:
                await asyncio.to_thread(deliver_due, engine, allow_private=settings.allow_private_callbacks)
            except Exception:  # a bad delivery round must not stop later ones
                log.exception("callback delivery round failed")
            await asyncio.sleep(settings.callback_interval_seconds)

    async def upkeep_forever(seconds: float, upkeep: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await asyncio.to_thread(upkeep)  # the database works with the GIL released
            except Exception:
                log.exception("database upkeep (%s) failed", engine.dialect.name)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with upkeep_aside(engine) as (seconds, upkeep):
            tasks = [asyncio.create_task(upkeep_forever(seconds, upkeep))]
            if settings.fit_in_child_process:
                decisions.fit_in_child_process()
            if settings.decision_batch_seconds > 0:
                decisions.defer_decisions(engine)
                tasks.append(asyncio.create_task(decide_forever()))
            if settings.callback_interval_seconds > 0:
                tasks.append(asyncio.create_task(deliver_forever()))
            if settings.refit_interval_seconds > 0:
                tasks.append(asyncio.create_task(refit_forever()))
            # what the process holds by now (modules, the app, the engine) lives as long as it
            # does: frozen, full collections skip it. Under the load bench (SQLite, 60 s) the 4
            # full collections took 83-103 ms each, every request in flight waiting through
            # them; frozen, 4-6 ms
            gc.collect()
            gc.freeze()
            yield
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if settings.decision_batch_seconds > 0:
                decisions.defer_decisions(engine, on=False)
                async with write_lock:
                    decisions.apply_deferred(engine)
            if settings.fit_in_child_process:
                await asyncio.to_thread(decisions.stop_fitting_process)

    return lifespan


def create_app(engine: Engine, settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    sqlite = engine.dialect.name == "sqlite"
    lock = asyncio.Lock()
    write_lock: contextlib.AbstractAsyncContextManager[Any] = lock if sqlite else contextlib.nullcontext()
    app = FastAPI(
        lifespan=_lifespan(engine, settings, write_lock),
        title="llmlabel",
        version="0.1.0",
        description="Annotation and adjudication API: tasks with hidden gold, votes, consensus, review.",
    )
    app.state.engine = engine
    app.state.settings = settings
    errors.install(app)
    for module in (tasks, projects, tokens, items, review, batches, quality):  # the busiest first: matched in order
        app.include_router(module.router)
    app.include_router(pages.router)

    @app.get("/api/v1/health", tags=["meta"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(ApplyDeferred, engine=engine)  # inside SerializeRequests: it writes
    if sqlite:
        app.add_middleware(SerializeRequests, lock=lock)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app


__all__ = ["ApiSettings", "create_app"]
