"""Entry point for uvicorn workers: each builds its app from ``LLMLABEL_*`` settings, so
several workers (or hosts) serve one database without sharing anything in memory."""

from __future__ import annotations

from fastapi import FastAPI

from llmlabel.api import ApiSettings, create_app
from llmlabel.errors import ConfigError
from llmlabel.settings import Settings
from llmlabel.store.db import open_engine


def app_from_env() -> FastAPI:
    settings = Settings()
    if not settings.database_url:
        raise ConfigError("set LLMLABEL_DATABASE_URL for the server workers")
    engine = open_engine(settings.database_url)
    fit_process = settings.fit_process if settings.fit_process is not None else engine.dialect.name == "sqlite"
    return create_app(
        engine,
        ApiSettings(max_body_bytes=settings.max_body_bytes, allow_private_callbacks=settings.allow_private_callbacks,
                    fit_in_child_process=fit_process),
    )
