"""The connection a PostgreSQL transaction function gets in the server: raw asyncpg, no adapter.

The store's transaction functions are synchronous (`fn(conn, *args)`, the same on SQLite and
PostgreSQL). On PostgreSQL, `PostgresDatabase` (database.py) runs each one in a greenlet of its
own, and every statement it executes leaves that greenlet once to await asyncpg on the
transaction's connection (`await_only`), with asyncpg's prepared-statement cache: one
`PREPARE` per statement per connection, then one round trip per statement. None of
SQLAlchemy's per-statement work runs (its execution context, cursor adapter and result
objects: 42 % of the server's time in the benchmark before this module existed). `dialect`
is SQLAlchemy's asyncpg dialect, so `Statement` compiles each statement for it once and
`conn.dialect.name` reads as on every other connection. `Mode` says whether the function runs
in a transaction or, as `one_read` and `one_change` declare it may, without BEGIN and COMMIT;
the connection holds it to that declaration.

asyncpg's errors are given SQLAlchemy's shape here (`driver_error`), as SQLAlchemy's own
asyncpg adapter would give them and as the SQLite path gives sqlite3's: an `IntegrityError`
is one class on every path, and `errors.translate` reads the SQLSTATE and the constraint's
name from the same places. No parameter values are in the message (they hold message text and
password hashes).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import asyncpg
from asyncpg import Connection as AsyncpgConnection
from asyncpg import Record
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.util import await_only

__all__ = [
    "DRIVER_ERRORS",
    "Mode",
    "PgConnection",
    "connection_lost",
    "discard",
    "driver_error",
    "mode_of",
    "one_change",
    "one_read",
]

_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
_DBAPI = PGDialect_asyncpg.import_dbapi()  # type: ignore[no-untyped-call]
_ERRORS: dict[type[BaseException], Callable[[str, BaseException], Exception]] = _DBAPI._asyncpg_error_translate


# What asyncpg raises (its server, protocol and client errors): `driver_error` shapes each.
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
# The server ended the session: administrator command, crash, starting up or shutting down.
_ENDED_SQLSTATES = {"57P01", "57P02", "57P03"}


def _lost(error: BaseException, raw: AsyncpgConnection | None) -> bool:
    if isinstance(error, asyncpg.InternalClientError | asyncpg.PostgresConnectionError):
        return True  # the protocol is out of step (e.g. a FATAL received while idle), or the socket is gone
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and (sqlstate in _ENDED_SQLSTATES or sqlstate.startswith("08")):
        return True
    return raw is not None and _closed(raw)


def _closed(raw: AsyncpgConnection) -> bool:
    try:
        return bool(raw.is_closed())
    except asyncpg.InterfaceError:  # a pool's connection that closed has been handed back already
        return True


def discard(raw: AsyncpgConnection) -> None:
    """Close the pool's connection `raw` at once, so that the pool opens another in its place."""
    if not _closed(raw):
        raw.terminate()


def connection_lost(error: BaseException) -> bool:
    """Whether `error` (as `driver_error` shaped it) left its connection unusable."""
    return isinstance(error, DBAPIError) and error.connection_invalidated


def driver_error(error: BaseException, sql: str | None, raw: AsyncpgConnection | None = None) -> BaseException:
    """SQLAlchemy's exception for an asyncpg `error` (chained to it), marked
    `connection_invalidated` when it left the connection `raw` unusable; anything else unchanged."""
    if not isinstance(error, DRIVER_ERRORS):
        return error
    adapted: Exception | None = None
    for kind in type(error).__mro__:
        if kind in _ERRORS:
            adapted = _ERRORS[kind](f"{type(error).__name__}: {error}", error)
            break
    assert adapted is not None, "each of DRIVER_ERRORS is in the map"
    adapted.__cause__ = error
    wrapped: BaseException = DBAPIError.instance(
        sql,
        None,
        adapted,
        _DBAPI.Error,
        hide_parameters=True,
        connection_invalidated=_lost(error, raw),
        dialect=_DIALECT,
    )
    return wrapped


class Mode(enum.Enum):
    """How a function's statements are wrapped on PostgreSQL (`PostgresDatabase`, database.py)."""

    TRANSACTION = "transaction"  # BEGIN before the function, COMMIT (or ROLLBACK) after it
    ONE_READ = "one read"  # no BEGIN: the function runs one statement, which is its own snapshot
    ONE_CHANGE = "one change"  # no BEGIN: each statement commits alone; the function makes at most one change


_MODE = "_sitecomms_pg_mode"
F = TypeVar("F", bound=Callable[..., Any])


def one_read(fn: F) -> F:
    """Declare that the read function `fn` runs exactly one statement (no BEGIN/COMMIT needed)."""
    setattr(fn, _MODE, Mode.ONE_READ)
    return fn


def one_change(fn: F) -> F:
    """Declare that the write function `fn` changes at most one thing, in one statement, and
    reads only what READ COMMITTED would give it anyway (no BEGIN/COMMIT needed)."""
    setattr(fn, _MODE, Mode.ONE_CHANGE)
    return fn


def mode_of(fn: Callable[..., Any]) -> Mode:
    mode = getattr(fn, _MODE, Mode.TRANSACTION)
    assert isinstance(mode, Mode)
    return mode


class PgConnection:
    """One function's asyncpg connection, used synchronously from inside its greenlet.

    Each statement says whether it `changes` anything (writes, or takes a row or transaction
    lock); outside TRANSACTION mode the connection holds the function to its declaration.
    `returned` is set by the database once the function has returned (its COMMIT follows)."""

    __slots__ = ("_changed", "_ran", "mode", "raw", "returned")

    dialect: ClassVar[Dialect] = _DIALECT

    def __init__(self, raw: AsyncpgConnection, mode: Mode = Mode.TRANSACTION) -> None:
        self.raw = raw
        self.mode = mode
        self._ran = False
        self._changed = False
        self.returned = False

    @property
    def retry_safe(self) -> bool:
        """Whether running the function again cannot repeat a change that was committed: nothing
        commits before COMMIT in a transaction, and a one-change function that has not yet
        attempted its change has committed nothing."""
        if self.mode is Mode.TRANSACTION:
            return not self.returned
        return not self._changed

    def _awaited(self, sql: str, awaitable: Any) -> Any:
        try:
            return await_only(awaitable)
        except DRIVER_ERRORS as error:
            raise driver_error(error, sql, self.raw) from error

    def _admit(self, changes: bool) -> None:
        if self.mode is Mode.TRANSACTION:
            return
        if self.mode is Mode.ONE_READ:  # refused before it runs: nothing is lost
            if changes or self._ran:
                raise AssertionError("a function declared `one_read` ran a second statement, or a change")
            self._ran = True
        elif changes:  # the first change is committed already: the tests on PostgreSQL hold each declaration
            if self._changed:
                raise AssertionError("a function declared `one_change` tried a second change")
            self._changed = True

    def fetch(self, sql: str, values: Sequence[Any], changes: bool) -> list[Record]:
        self._admit(changes)
        return self._awaited(sql, self.raw.fetch(sql, *values))  # type: ignore[no-any-return]

    def fetchrow(self, sql: str, values: Sequence[Any], changes: bool) -> Record | None:
        self._admit(changes)
        return self._awaited(sql, self.raw.fetchrow(sql, *values))

    def execute(self, sql: str, values: Sequence[Any], changes: bool) -> int:
        """Run a statement returning no rows; the number of rows it changed (from its status)."""
        self._admit(changes)
        status: str = self._awaited(sql, self.raw.execute(sql, *values))
        count = status.rpartition(" ")[2]
        return int(count) if count.isdigit() else 0

    def executemany(self, sql: str, values: Sequence[Sequence[Any]], changes: bool) -> None:
        self._admit(changes)
        self._awaited(sql, self.raw.executemany(sql, values))
