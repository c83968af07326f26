"""Ad-hoc SQL in tests, on any connection a transaction function gets.

The store runs only its named `Statement`s; tests also poke at rows with one-off Core
statements or `text()`. `execute(conn, statement, params)` runs one on SQLAlchemy's
connections as `conn.execute` does, and on the server's PostgreSQL `PgConnection` by
compiling it for asyncpg and preparing it there, with the same bind and result processing,
and gives back a small result with the methods the tests use.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection as SAConnection
from sqlalchemy.sql import ClauseElement
from sqlalchemy.util import await_only

from sitecomms.store.database import Connection
from sitecomms.store.pg import PgConnection


class Rows:
    def __init__(self, rows: list[Sequence[Any]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Sequence[Any]]:
        return iter(self._rows)

    def all(self) -> list[Sequence[Any]]:
        return list(self._rows)

    fetchall = all

    def first(self) -> Sequence[Any] | None:
        return self._rows[0] if self._rows else None

    fetchone = first

    def one(self) -> Sequence[Any]:
        if len(self._rows) != 1:
            raise AssertionError(f"expected one row, got {len(self._rows)}")
        return self._rows[0]

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]


def execute(conn: Connection, statement: ClauseElement, params: Mapping[str, Any] | None = None) -> Any:
    if isinstance(conn, SAConnection):
        return conn.execute(statement, dict(params or {}))  # type: ignore[call-overload]
    assert isinstance(conn, PgConnection)
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    values = compiled.construct_params(dict(params or {}))
    processors = compiled._bind_processors
    positional = [
        processors[name](values[name]) if name in processors else values[name] for name in compiled.positiontup or ()
    ]
    prepared = await_only(conn.raw.prepare(compiled.string))
    raw = await_only(prepared.fetch(*positional))
    status = prepared.get_statusmsg() or ""
    count = status.rpartition(" ")[2]
    processors_out = [
        column.type.dialect_impl(conn.dialect).result_processor(conn.dialect, None)
        for column in getattr(statement, "exported_columns", ())
    ]
    rows: list[Sequence[Any]] = [
        tuple(process(value) if process else value for process, value in zip(processors_out, row, strict=True))
        if len(processors_out) == len(row)
        else tuple(row)
        for row in raw
    ]
    return Rows(rows, int(count) if count.isdigit() else 0)


@contextmanager
def savepoint(conn: Connection) -> Iterator[None]:
    """Run the block in a savepoint that is always rolled back."""
    if isinstance(conn, SAConnection):
        nested = conn.begin_nested()
        try:
            yield
        finally:
            nested.rollback()
        return
    nested_pg = conn.raw.transaction()
    await_only(nested_pg.start())
    try:
        yield
    finally:
        await_only(nested_pg.rollback())
