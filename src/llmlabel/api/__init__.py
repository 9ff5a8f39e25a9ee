"""The HTTP API: an app factory over an engine and settings; routers hold no logic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from sqlalchemy.engine import Engine

from llmlabel.api import errors
from llmlabel.api.deps import ApiSettings
from llmlabel.api.limits import BodySizeLimit
from llmlabel.api.routes import batches, items, projects, quality, review, tasks, tokens
from llmlabel.api.serialize import SerializeRequests
from llmlabel.callbacks import deliver_due
from llmlabel.decisions import refit_changed
from llmlabel.web import pages

log = logging.getLogger("llmlabel.api")


def _lifespan(engine: Engine, settings: ApiSettings) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """Background work of a server: delivering due callbacks, and refitting consensus for the
    projects that received votes since the last round."""

    async def refit_forever() -> None:
        last_vote: dict[int, int] = {}
        while True:
            await asyncio.sleep(settings.refit_interval_seconds)
            try:
                await asyncio.to_thread(refit_changed, engine, last_vote)
            except Exception:  # a failed round is retried at the next one
                log.exception("periodic consensus refit failed")

    async def deliver_forever() -> None:
        while True:
            try:
                await asyncio.to_thread(deliver_due, engine, allow_private=settings.allow_private_callbacks)
            except Exception:  # a bad delivery round must not stop later ones
                log.exception("callback delivery round failed")
            await asyncio.sleep(settings.callback_interval_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = []
        if settings.callback_interval_seconds > 0:
            tasks.append(asyncio.create_task(deliver_forever()))
        if settings.refit_interval_seconds > 0:
            tasks.append(asyncio.create_task(refit_forever()))
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan


def create_app(engine: Engine, settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    app = FastAPI(
        lifespan=_lifespan(engine, settings),
        title="llmlabel",
        version="0.1.0",
        description="Annotation and adjudication API: tasks with hidden gold, votes, consensus, review.",
    )
    app.state.engine = engine
    app.state.settings = settings
    errors.install(app)
    for module in (projects, tokens, items, tasks, review, batches, quality):
        app.include_router(module.router)
    app.include_router(pages.router)

    @app.get("/api/v1/health", tags=["meta"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    if engine.dialect.name == "sqlite":
        app.add_middleware(SerializeRequests)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app


__all__ = ["ApiSettings", "create_app"]
