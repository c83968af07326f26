"""The store's own failures, and the one translation from driver errors into them.

Callers of the store see two failures besides their own exceptions, the same on SQLite and
PostgreSQL:

- `Unavailable`: the database cannot be reached or used now (refused, dropped, missing, out
  of connections, locked by someone else for too long); retrying later may succeed.
- `Duplicate`: a unique constraint was violated; `constraint` is its name in `schema.py`
  (e.g. `schema.UNIQUE_IDEMPOTENCY_KEY`), so the caller knows *which* duplicate it met.

`translate(exc, name)` decides, from SQLite's extended result codes and PostgreSQL's
SQLSTATEs (never from message text, except to name SQLite's violated columns), and is the
only place that does: the SQLite readers and writer thread, the PostgreSQL transactions and
the blocking helper all hand their failures to it at the transaction's edge. Anything else (a
syntax error, a foreign key or check violation, a caller's own exception) comes back
unchanged: it is a bug or the caller's business, not the database's state.
"""

from __future__ import annotations

import re
import sqlite3
from functools import cache
from typing import NoReturn

from sqlalchemy import PrimaryKeyConstraint, UniqueConstraint
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from sitecomms.store.schema import metadata


class StoreError(Exception):
    """A failure the store reports in its own terms."""


class Unavailable(StoreError):
    """The database cannot be reached, or is locked by someone else for too long."""


class Duplicate(StoreError):
    """A unique constraint was violated: `constraint` names it (as `schema.py` does)."""

    def __init__(self, constraint: str, detail: str) -> None:
        super().__init__(f"duplicate {constraint}: {detail}")
        self.constraint = constraint


# SQLite primary result codes (the low byte of the extended code) meaning "not now".
_SQLITE_UNAVAILABLE = {
    5,  # SQLITE_BUSY: another connection holds the lock past busy_timeout
    6,  # SQLITE_LOCKED
    7,  # SQLITE_NOMEM
    8,  # SQLITE_READONLY: the file was moved or deleted, or its file system remounted read-only
    9,  # SQLITE_INTERRUPT
    10,  # SQLITE_IOERR
    13,  # SQLITE_FULL
    14,  # SQLITE_CANTOPEN
    15,  # SQLITE_PROTOCOL
}
_SQLITE_DUPLICATE = {1555, 2067}  # SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE
_SQLITE_COLUMNS = re.compile(r"UNIQUE constraint failed: (.+)$")
_SQLITE_INDEX = re.compile(r"UNIQUE constraint failed: index '(.+)'$")

# PostgreSQL SQLSTATE classes and codes meaning "not now".
_PG_UNAVAILABLE_CLASSES = {
    "08",  # connection exception
    "28",  # invalid authorization
    "53",  # insufficient resources (too many connections, disk full)
    "57",  # operator intervention (shutdown, cannot connect now, query cancelled)
}
# The database does not exist; lock not available; serialization failure and deadlock (once
# `PostgresDatabase.write` has retried them enough: still contended, so "not now").
# A read-only transaction refused a write (25006): a standby, a primary in recovery, or
# `default_transaction_read_only` set during a failover or maintenance: "not now" too.
_PG_UNAVAILABLE = {"3D000", "55P03", "40001", "40P01", "25006"}
_PG_DUPLICATE = "23505"  # unique_violation


def translate(exc: BaseException, name: str) -> BaseException:
    """The store's failure for `exc`, raised while running the transaction `name`; or `exc`."""
    driver = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(driver, sqlite3.Error):
        code = getattr(driver, "sqlite_errorcode", None) or 0
        if code in _SQLITE_DUPLICATE:
            return Duplicate(_sqlite_constraint(str(driver)), f"{name}: {driver}")
        if code & 0xFF in _SQLITE_UNAVAILABLE:  # the extended name tells BUSY_SNAPSHOT from BUSY, etc.
            return Unavailable(f"{name}: {driver} ({getattr(driver, 'sqlite_errorname', code)})")
        return exc
    sqlstate = getattr(driver, "sqlstate", None)
    if isinstance(sqlstate, str):
        if sqlstate == _PG_DUPLICATE:
            return Duplicate(_pg_constraint(driver), f"{name}: {driver}")
        if sqlstate in _PG_UNAVAILABLE or sqlstate[:2] in _PG_UNAVAILABLE_CLASSES:
            return Unavailable(f"{name}: {driver}")
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return Unavailable(f"{name}: {driver}")
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout | OSError):  # no route, closed, no free one
        return Unavailable(f"{name}: {driver}")
    return exc


def raise_translated(exc: BaseException, name: str) -> NoReturn:
    """Raise the store's failure for `exc` (chained to it), or `exc` itself, unchanged."""
    failure = translate(exc, name)
    if failure is exc:
        raise exc
    raise failure from exc


def _pg_constraint(driver: BaseException) -> str:
    """asyncpg names the constraint on its own exception, which SQLAlchemy's adapter chains."""
    for candidate in (driver, driver.__cause__):
        found = getattr(candidate, "constraint_name", None)
        if isinstance(found, str) and found:
            return found
    return "unknown"


def _sqlite_constraint(message: str) -> str:
    """SQLite names the violated columns (`users.email`), or an index; map columns to the name."""
    if found := _SQLITE_INDEX.search(message):
        return found.group(1)
    if not (found := _SQLITE_COLUMNS.search(message)):
        return "unknown"
    columns = [part.strip() for part in found.group(1).split(",")]
    table = columns[0].partition(".")[0]
    key = (table, frozenset(column.partition(".")[2] for column in columns))
    return _unique_names().get(key, found.group(1))


@cache
def _unique_names() -> dict[tuple[str, frozenset[str]], str]:
    """(table, columns) → name, for every primary key, unique constraint and unique index."""
    names: dict[tuple[str, frozenset[str]], str] = {}
    for table in metadata.tables.values():
        for constraint in table.constraints:
            if isinstance(constraint, PrimaryKeyConstraint | UniqueConstraint) and constraint.name:
                names[(table.name, frozenset(c.name for c in constraint.columns))] = str(constraint.name)
        for index in table.indexes:
            if index.unique and index.name:
                names[(table.name, frozenset(c.name for c in index.columns))] = str(index.name)
    return names
