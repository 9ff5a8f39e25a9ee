"""Statements of the busiest paths, compiled once per dialect and run on the driver's cursor.

Why: an annotator's next task and vote run about fifteen short statements, and SQLAlchemy's
execution layer (cache-key lookup, parameter and row processing, result objects) cost more
CPU than the database spent running them: 44% of an in-process next+vote cycle on SQLite
against 22% inside SQLite (py-spy). A ``Prepared`` statement is still built with SQLAlchemy
from the table metadata and compiled by its dialect; only the execution skips the machinery.
Parameters and rows pass through the column types' own bind and result processors, so what is
written and read is exactly what SQLAlchemy would write and read (tested statement by
statement against it on SQLite and PostgreSQL).

The statement runs in the session's transaction, on the connection the session holds, so it
sees and is seen by everything else the session does; the session's identity map does not
learn of its writes (callers that hold ORM objects keep them in step, as with any Core
statement).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, InvalidRequestError
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import UpdateBase

from llmlabel.errors import StorageError

_DRIVER = "llmlabel.driver_cursor"
_EXPANDING = re.compile(r"__\[POSTCOMPILE_(\w+)\]")
# an empty list: a subquery with no rows keeps "x IN ()" false and "x NOT IN ()" true
_EMPTY = "SELECT CAST(NULL AS INTEGER) WHERE 1 = 0"


@event.listens_for(Session, "after_transaction_end")
def _forget_driver(session: Session, _transaction: Any) -> None:
    session.info.pop(_DRIVER, None)


def _driver(session: Session) -> tuple[Any, Dialect]:
    """A DB-API cursor on the connection of the session's current transaction (begun if need
    be), and its dialect. One cursor serves the transaction's statements (each is fetched
    before the next runs): a new one per statement cost psycopg 15 us more CPU each."""
    held = session.info.get(_DRIVER)
    if held is None:
        conn = session.connection()
        driver = conn.connection.driver_connection
        assert driver is not None  # the session's connection is open: it just began the transaction
        held = session.info[_DRIVER] = (driver.cursor(), conn.dialect)
    return held


def dialect_name(session: Session) -> str:
    """The session's database: "sqlite" or "postgresql"."""
    return _driver(session)[1].name


Processor = Callable[[Any], Any] | None


@dataclass
class _Form:
    """The statement as the driver takes it, for one dialect and one shape of parameters."""

    sql: str
    names: tuple[str, ...]  # positional drivers: the parameter of each placeholder, in order
    positional: bool
    binds: dict[str, Processor]
    defaults: dict[str, Any]
    expanding: frozenset[str]
    dialect: Dialect
    types: tuple[Any, ...]  # of the result columns
    results: tuple[Processor, ...] | None = None  # made from the first result's description

    def rows(self, cursor: Any, raw: list[Sequence[Any]]) -> list[tuple[Any, ...]]:
        if self.results is None:  # PostgreSQL's processors depend on the column's type code
            self.results = tuple(t.result_processor(self.dialect, d[1])
                                 for t, d in zip(self.types, cursor.description, strict=True))
        procs = self.results
        if not any(procs):
            return [tuple(r) for r in raw]
        return [tuple(p(v) if p else v for p, v in zip(procs, r, strict=True)) for r in raw]

    def parameters(self, params: Mapping[str, Any]) -> Any:
        values = {**self.defaults, **params} if self.defaults else params
        out: list[Any] | dict[str, Any] = [] if self.positional else {}
        for name in self.names:
            value, process = values[name], self.binds[name]
            if name in self.expanding:
                items = [process(v) for v in value] if process else list(value)
                if isinstance(out, list):
                    out.extend(items)
                else:
                    out.update({f"{name}_{i}": v for i, v in enumerate(items, 1)})
            elif isinstance(out, list):
                out.append(process(value) if process else value)
            else:
                out[name] = process(value) if process else value
        return out


class Prepared:
    """One statement, compiled on first use per dialect (and per length of its list
    parameters, and per set of columns an INSERT or UPDATE is given)."""

    def __init__(self, clause: Any) -> None:
        self.clause = clause
        self._dml = isinstance(clause, UpdateBase)
        self._forms: dict[tuple[Any, ...], _Form] = {}

    def _form(self, dialect: Dialect, params: Mapping[str, Any]) -> _Form:
        lists = tuple(sorted((k, len(v)) for k, v in params.items() if isinstance(v, list | tuple)))
        key = (dialect.name, lists, tuple(params) if self._dml else None)
        form = self._forms.get(key)
        if form is None:
            form = self._forms[key] = self._compile(dialect, params, dict(lists))
        return form

    def _compile(self, dialect: Dialect, params: Mapping[str, Any], lengths: dict[str, int]) -> _Form:
        compiled = self.clause.compile(dialect=dialect, column_keys=list(params) if self._dml else None)
        by_name = compiled.binds
        names = tuple(compiled.positiontup) if dialect.positional else tuple(compiled.bind_names.values())
        try:  # the values SQLAlchemy gives the parameters the caller does not: literals, constants
            constructed = compiled.construct_params(dict(params))
        except InvalidRequestError as exc:
            raise StorageError(f"{exc.args[0]} in: {compiled.string.splitlines()[0]}") from None
        prefetch = {c.key: c for c in [*getattr(compiled, "insert_prefetch", ()), *getattr(compiled, "update_prefetch", ())]}
        defaults: dict[str, Any] = {}
        for name in names:
            if name in params:
                continue
            column = prefetch.get(name)
            if column is not None and column.default is not None and column.default.is_scalar:
                defaults[name] = column.default.arg  # a column default SQLAlchemy fills in at execution
            elif column is None and name in constructed:
                defaults[name] = constructed[name]
            else:
                raise StorageError(f"statement needs the parameter {name!r}: {compiled.string.splitlines()[0]}")
        expanding = frozenset(n for n in names if by_name[n].expanding)
        for name in expanding:
            if not isinstance(by_name[name].type, Integer):
                raise StorageError(f"list parameter {name!r} must hold integers")

        def placeholders(match: re.Match[str]) -> str:
            name, n = match.group(1), lengths.get(match.group(1), 0)
            if n == 0:
                return _EMPTY
            if dialect.positional:
                return ", ".join("?" for _ in range(n))
            return ", ".join(f"%({name}_{i})s" for i in range(1, n + 1))

        sql = _EXPANDING.sub(placeholders, compiled.string)
        binds = {n: by_name[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names}
        types = tuple(c.type.dialect_impl(dialect) for c in getattr(self.clause, "exported_columns", ()))
        return _Form(sql, names, dialect.positional, binds, defaults, expanding, dialect, types)

    def _run(self, session: Session, params: Mapping[str, Any]) -> tuple[_Form, Any]:
        cursor, dialect = _driver(session)
        form = self._form(dialect, params)
        values = form.parameters(params)
        try:
            return form, cursor.execute(form.sql, values)
        except dialect.loaded_dbapi.Error as exc:  # as SQLAlchemy raises it: IntegrityError, …
            raise DBAPIError.instance(form.sql, values, exc, dialect.loaded_dbapi.Error) from exc

    def all(self, session: Session, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        form, cursor = self._run(session, params or {})
        return form.rows(cursor, cursor.fetchall())

    def first(self, session: Session, params: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
        form, cursor = self._run(session, params or {})
        raw = cursor.fetchone()
        return None if raw is None else form.rows(cursor, [raw])[0]

    def scalar(self, session: Session, params: Mapping[str, Any] | None = None) -> Any:
        row = self.first(session, params)
        return None if row is None else row[0]

    def scalars(self, session: Session, params: Mapping[str, Any] | None = None) -> list[Any]:
        return [r[0] for r in self.all(session, params)]

    def run(self, session: Session, params: Mapping[str, Any] | None = None) -> int:
        """Execute a statement that returns no rows; the number of rows it touched."""
        _, cursor = self._run(session, params or {})
        return int(cursor.rowcount)

    def returning(self, session: Session, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """An INSERT … RETURNING of several rows: what it returns, row by row. Many rows go
        through SQLAlchemy, which folds them into multi-row VALUES (the drivers cannot return
        rows from one executemany); the overhead it adds is paid once per batch."""
        if len(rows) == 1:
            return self.all(session, rows[0])
        return [tuple(r) for r in session.connection().execute(self.clause, list(rows))] if rows else []

    def run_many(self, session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per parameter row (rows of one shape), in one driver call."""
        if not rows:
            return
        cursor, dialect = _driver(session)
        form = self._form(dialect, rows[0])
        values = [form.parameters(r) for r in rows]
        try:
            cursor.executemany(form.sql, values)
        except dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(form.sql, values, exc, dialect.loaded_dbapi.Error) from exc
