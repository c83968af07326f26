"""The connection a PostgreSQL transaction function gets in the server: raw asyncpg, no adapter.

The store's transaction functions are synchronous (`fn(conn, *args)`, the same on SQLite and
PostgreSQL). On PostgreSQL, `PostgresDatabase` (database.py) runs each one in a greenlet of its
own, and every statement it executes leaves that greenlet once to await asyncpg on the
transaction's connection (`await_only`), with asyncpg's prepared-statement cache: one
`PREPARE` per statement per connection, then one round trip per statement. None of
SQLAlchemy's per-statement work runs (its execution context, cursor adapter and result
objects: 42 % of the server's time in the benchmark before this module existed). `dialect`
is SQLAlchemy's asyncpg dialect, so `Statement` compiles each statement for it once and
`conn.dialect.name` reads as on every other connection.

asyncpg's errors are given SQLAlchemy's shape here (`driver_error`), as SQLAlchemy's own
asyncpg adapter would give them and as the SQLite path gives sqlite3's: an `IntegrityError`
is one class on every path, and `errors.translate` reads the SQLSTATE and the constraint's
name from the same places. No parameter values are in the message (they hold message text and
password hashes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import asyncpg
from asyncpg import Connection as AsyncpgConnection
from asyncpg import Record
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.util import await_only

__all__ = ["PgConnection", "driver_error"]

_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
_DBAPI = PGDialect_asyncpg.import_dbapi()  # type: ignore[no-untyped-call]
_ERRORS: dict[type[BaseException], Callable[[str, BaseException], Exception]] = _DBAPI._asyncpg_error_translate


def driver_error(error: BaseException, sql: str | None) -> BaseException:
    """SQLAlchemy's exception for an asyncpg `error` (chained to it); anything else unchanged."""
    if not isinstance(error, asyncpg.PostgresError | asyncpg.InterfaceError):
        return error
    adapted: Exception | None = None
    for kind in type(error).__mro__:
        if kind in _ERRORS:
            adapted = _ERRORS[kind](f"{type(error).__name__}: {error}", error)
            break
    assert adapted is not None, "PostgresError and InterfaceError are both in the map"
    adapted.__cause__ = error
    wrapped: BaseException = DBAPIError.instance(
        sql, None, adapted, _DBAPI.Error, hide_parameters=True, dialect=_DIALECT
    )
    return wrapped


def _awaited(sql: str, awaitable: Any) -> Any:
    try:
        return await_only(awaitable)
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise driver_error(error, sql) from error


class PgConnection:
    """One transaction's asyncpg connection, used synchronously from inside its greenlet."""

    __slots__ = ("raw",)

    dialect: ClassVar[Dialect] = _DIALECT

    def __init__(self, raw: AsyncpgConnection) -> None:
        self.raw = raw

    def fetch(self, sql: str, values: Sequence[Any]) -> list[Record]:
        return _awaited(sql, self.raw.fetch(sql, *values))  # type: ignore[no-any-return]

    def fetchrow(self, sql: str, values: Sequence[Any]) -> Record | None:
        return _awaited(sql, self.raw.fetchrow(sql, *values))

    def execute(self, sql: str, values: Sequence[Any]) -> int:
        """Run a statement returning no rows; the number of rows it changed (from its status)."""
        status: str = _awaited(sql, self.raw.execute(sql, *values))
        count = status.rpartition(" ")[2]
        return int(count) if count.isdigit() else 0

    def executemany(self, sql: str, values: Sequence[Sequence[Any]]) -> None:
        _awaited(sql, self.raw.executemany(sql, values))
