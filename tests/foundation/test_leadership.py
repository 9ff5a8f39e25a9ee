"""One server process of several leads the periodic refit; when it goes, another takes over."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from llmlabel.store.db import Leadership


def test_one_process_leads_and_the_next_takes_over(engine: Engine) -> None:
    first, second = Leadership(engine), Leadership(engine)  # as two worker processes would
    try:
        assert first.held()
        assert first.held()  # asking again keeps the lead
        postgres = engine.dialect.name == "postgresql"
        assert second.held() is not postgres  # SQLite: every process leads
        first.release()
        assert second.held()
    finally:
        first.release()
        second.release()
