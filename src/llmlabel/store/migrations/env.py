"""Alembic environment: runs against the engine llmlabel hands over in ``config.attributes``."""

from alembic import context
from sqlalchemy import text
from sqlmodel import SQLModel

import llmlabel.store.tables  # noqa: F401  (registers the tables on SQLModel.metadata)

_LOCK_KEY = 0x6C6C6D6C  # "llml": one upgrader at a time when several workers start together


def run_migrations_online() -> None:
    engine = context.config.attributes["engine"]
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=SQLModel.metadata,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                connection.commit()


run_migrations_online()
