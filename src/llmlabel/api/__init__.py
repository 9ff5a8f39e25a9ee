"""The HTTP API: an app factory over an engine and settings; routers hold no logic."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.engine import Engine

from llmlabel.api import errors
from llmlabel.api.deps import ApiSettings
from llmlabel.api.limits import BodySizeLimit
from llmlabel.api.routes import items, projects, review, tasks, tokens


def create_app(engine: Engine, settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    app = FastAPI(
        title="llmlabel",
        version="0.1.0",
        description="Annotation and adjudication API: tasks with hidden gold, votes, consensus, review.",
    )
    app.state.engine = engine
    app.state.settings = settings
    errors.install(app)
    for module in (projects, tokens, items, tasks, review):
        app.include_router(module.router)

    @app.get("/api/v1/health", tags=["meta"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app


__all__ = ["ApiSettings", "create_app"]
