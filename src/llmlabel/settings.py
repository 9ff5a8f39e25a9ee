"""Process settings from ``LLMLABEL_*`` environment variables, built at the entry points and
passed down; no module builds them at import time."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMLABEL_", extra="ignore")

    database_url: str | None = None
    """SQLite file or PostgreSQL URL; default: ``llmlabel.db`` beside the project file."""
    allow_private_callbacks: bool = False
    """Let batch callbacks go to private or loopback addresses (off: SSRF protection)."""
    max_body_bytes: int = 2_000_000
    fit_process: bool | None = None
    """Fit consensus models in a child process of each server worker (default: on SQLite, whose
    one serving process is the bottleneck while a core idles; off on PostgreSQL, where several
    workers already share the cores and a child each oversubscribes them)."""
