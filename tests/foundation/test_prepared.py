"""Prepared statements read and write exactly what SQLAlchemy would, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from llmlabel.errors import StorageError
from llmlabel.store.db import session_scope
from llmlabel.store.prepared import Prepared
from llmlabel.store.tables import Item, Lease, Project, Vote, Voter

ITEMS = Item.__table__  # type: ignore[attr-defined]
VOTES = Vote.__table__  # type: ignore[attr-defined]
LEASES = Lease.__table__  # type: ignore[attr-defined]
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)  # no microseconds: SQLite stores those differently


def _seed(session: Session) -> tuple[int, int]:
    project = Project(name="p", config_hash="h")
    session.add(project)
    session.flush()
    for i in range(5):
        session.add(Item(project_id=project.id, external_id=f"i{i}", fields={"text": f"é {i}", "n": [i, None]},
                         content_hash=str(i), priority=i / 10, created_at=T0 + timedelta(seconds=i)))
    voter = Voter(project_id=project.id, name="v", kind="human")
    session.add(voter)
    session.flush()
    return project.id, voter.id  # type: ignore[return-value]


def test_rows_match_sqlalchemy_types_included(engine) -> None:
    stmt = (select(ITEMS.c.id, ITEMS.c.external_id, ITEMS.c.fields, ITEMS.c.created_at, ITEMS.c.priority,
                   ITEMS.c.final_label)
            .where(ITEMS.c.project_id == bindparam("p"), ITEMS.c.created_at >= bindparam("since"),
                   ITEMS.c.status == "open")
            .order_by(ITEMS.c.id))
    with session_scope(engine) as s:
        project_id, _ = _seed(s)
        params = {"p": project_id, "since": T0 + timedelta(seconds=2)}
        expected = [tuple(r) for r in s.connection().execute(stmt, params)]
        got = Prepared(stmt).all(s, params)
    assert got == expected and len(got) == 3
    assert got[0][2] == {"text": "é 2", "n": [2, None]} and got[0][3] == T0 + timedelta(seconds=2)


def test_list_parameters_of_every_length_including_none(engine) -> None:
    stmt = Prepared(select(ITEMS.c.external_id).where(ITEMS.c.id.in_(bindparam("ids", expanding=True)))
                    .order_by(ITEMS.c.id))
    excluding = Prepared(select(ITEMS.c.id).where(ITEMS.c.id.not_in(bindparam("ids", expanding=True))))
    with session_scope(engine) as s:
        _seed(s)
        ids = [r[0] for r in s.connection().execute(select(ITEMS.c.id).order_by(ITEMS.c.id))]
        assert stmt.scalars(s, {"ids": ids[:1]}) == ["i0"]
        assert stmt.scalars(s, {"ids": ids[1:4]}) == ["i1", "i2", "i3"]
        assert stmt.scalars(s, {"ids": []}) == []
        assert sorted(excluding.scalars(s, {"ids": []})) == ids
        assert sorted(excluding.scalars(s, {"ids": ids[:4]})) == ids[4:]


def test_writes_fill_column_defaults_and_literal_values(engine) -> None:
    add_vote = Prepared(insert(VOTES).returning(VOTES.c.id))
    give_back = Prepared(update(LEASES).where(LEASES.c.id == bindparam("lease")).values(state="expired"))
    with session_scope(engine) as s:
        project_id, voter_id = _seed(s)
        item_id = s.connection().execute(select(ITEMS.c.id).limit(1)).scalar_one()
        vote_id = add_vote.scalar(s, {"project_id": project_id, "item_id": item_id, "voter_id": voter_id,
                                      "label": "yes", "created_at": T0})
        lease_id = s.connection().execute(insert(LEASES).returning(LEASES.c.id), {
            "project_id": project_id, "item_id": item_id, "voter_id": voter_id, "token": "t", "created_at": T0,
            "expires_at": T0}).scalar_one()
        assert give_back.run(s, {"lease": lease_id}) == 1
        vote = s.connection().execute(select(VOTES).where(VOTES.c.id == vote_id)).one()
        lease = s.connection().execute(select(LEASES.c.state, LEASES.c.state).where(LEASES.c.id == lease_id)).one()
    # the column defaults SQLAlchemy would have filled in, and the SET value, not the column default
    assert (vote.cost_usd, vote.unsure, vote.label) == (0.0, False, "yes")
    assert lease[0] == "expired"


def test_driver_errors_arrive_as_sqlalchemy_errors_and_missing_parameters_are_named(engine) -> None:
    add_vote = Prepared(insert(VOTES))
    with session_scope(engine) as s:
        project_id, voter_id = _seed(s)
        item_id = s.connection().execute(select(ITEMS.c.id).limit(1)).scalar_one()
        row = {"project_id": project_id, "item_id": item_id, "voter_id": voter_id, "label": "x", "created_at": T0}
        add_vote.run(s, row)
        with pytest.raises(IntegrityError), s.begin_nested():
            add_vote.run(s, row)  # one vote per (item, voter)
        with pytest.raises(StorageError, match="'item_id'"):
            Prepared(select(ITEMS.c.id).where(ITEMS.c.id == bindparam("item_id"))).all(s, {})
