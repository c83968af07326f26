"""Named transactions on SQLite or PostgreSQL, behind one small interface.

Store query functions are plain synchronous functions `fn(conn, *args)` that run inside a
transaction; `Database.write(name, fn, ...)` and `Database.read(name, fn, ...)` run them and
name the transaction in logs (as Synapse's `runInteraction` does). The name says what the
transaction is for; timings are logged per name.

- **SQLite** (the embedded default) runs every write on one dedicated writer thread with one
  connection (`BEGIN IMMEDIATE`): SQLite has one writer anyway, and serialising in-process
  avoids lock contention and gives the org stream its commit order for free. Writes that queue
  up while a commit is in progress share the next one (group commit, `writer.py`). Reads run on a
  small pool of reader threads, each in a deferred transaction, so each read is one snapshot
  under WAL.
- **PostgreSQL** runs the same functions on an asyncpg pool, each in a greenlet, with the
  statements going straight to asyncpg (pg.py; no SQLAlchemy between). Reads use
  `REPEATABLE READ READ ONLY` so several statements see one snapshot; writes use
  `READ COMMITTED` and are retried on deadlock or serialization failure.

Both engines hand every failure to `errors.translate`: failing to reach the database, or a
lock held too long by another process, raises `errors.Unavailable`; a unique constraint
violated raises `errors.Duplicate(constraint)`, for the caller to interpret. An SQLite file is
created readable by its owner only (0600) before SQLite first opens it (`create_private_file`;
SQLite gives its -wal and -shm files the main file's mode). `Connection`
(statements.py: SQLAlchemy's, or PostgreSQL's `PgConnection`) is exported as the type
transaction functions take, so callers above the store
name it from here, never from SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import asyncpg
from sqlalchemy import Connection as SAConnection
from sqlalchemy import Engine, create_engine, event, literal_column, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import QueuePool
from sqlalchemy.util import greenlet_spawn

from sitecomms.store.errors import raise_translated
from sitecomms.store.pg import (
    DRIVER_ERRORS,
    Mode,
    PgConnection,
    connection_lost,
    discard,
    driver_error,
    mode_of,
    one_change,
    one_read,
)
from sitecomms.store.statements import Connection, Statement
from sitecomms.store.writer import Checkpointer, WriterThread

__all__ = [
    "Connection",
    "Database",
    "PostgresDatabase",
    "SQLiteDatabase",
    "TxnFn",
    "create_private_file",
    "normalise_url",
    "one_change",
    "one_read",
    "open_database",
    "sqlite_file",
    "use_wal",
]

log = logging.getLogger("sitecomms.store.txn")

P = ParamSpec("P")
T = TypeVar("T")

TxnFn = Callable[Concatenate[Connection, P], T]

_RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected
_WRITE_ATTEMPTS = 5
_SQLITE_BUSY_SECONDS = 5.0  # waiting for another process's lock that long: Unavailable
_CONVERTING_TO_WAL = threading.Lock()
_LOST_CONNECTION_ATTEMPTS = 3  # a pool may hold several connections the server ended at once
_PREPARED_PER_CONNECTION = 1024  # every statement and IN-list variant of the store, prepared once
_ACQUIRE_SECONDS = 30.0  # waiting for a free connection that long: Unavailable
_PING = Statement("database.ping", select(literal_column("1")))


class Database(Protocol):
    dialect: str

    async def read(self, name: str, fn: TxnFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T: ...

    async def write(self, name: str, fn: TxnFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T: ...

    async def write_background(self, name: str, fn: TxnFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A write no user waits for (pushes' bookkeeping, retention) that yields to the others:
        SQLite's writer runs it alone, when no other write waits (writer.py); PostgreSQL has no
        single writer to share, so there it is `write`."""

    async def ping(self) -> None: ...

    def connections_in_use(self) -> int:
        """Connections checked out of the pool now (PostgreSQL; SQLite: its readers' and writer's)."""

    def observe_commits(self, observer: Callable[[int, float], None]) -> None:
        """Call `observer(writes, seconds)` after each SQLite writer transaction (no-op on PostgreSQL)."""

    async def close(self) -> None: ...


def _parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise ValueError(str(exc)) from exc


def normalise_url(url: str) -> str:
    """Map user-facing URLs (`sqlite:///x.db`, `postgresql://…`) to the drivers we use.

    ValueError when `url` is not a database URL, or not one of an engine we support."""
    parsed = _parse_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    if backend == "sqlite":
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r} (use sqlite:// or postgresql://)")


def sqlite_file(url: str) -> Path | None:
    """The file an SQLite URL names; None for PostgreSQL, an in-memory database or a `file:` URI."""
    parsed = _parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:") or "uri" in parsed.query:
        return None
    return Path(database)


def create_private_file(url: str) -> None:
    """Create the SQLite file `url` names, empty and with mode 0600, unless it exists already.

    SQLite would create it with the umask's mode (usually world-readable), and gives its -wal
    and -shm files the main file's mode. Any failure here (no such directory, no permission)
    is left for SQLite to report when it opens the file, as it always has."""
    path = sqlite_file(url)
    if path is None:
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:  # FileExistsError: already there, and its mode is the operator's
        return


def use_wal(dbapi_connection: sqlite3.Connection) -> None:
    """Put the connection's file in WAL mode (stored in the file: a no-op, needing no lock, once done).

    Every SQLite engine of SiteComms calls this on connect, the migrations' first, so a server
    finds its file converted already. Connections converting one file at the same moment get
    SQLITE_BUSY at once, without waiting (a server's first write once failed so in CI, when the
    migrations had left the file in the rollback-journal mode); this process's take turns."""
    with _CONVERTING_TO_WAL:
        dbapi_connection.execute("PRAGMA journal_mode=WAL").close()


def open_database(url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 10) -> Database:
    normalised = normalise_url(url)
    if normalised.startswith("sqlite"):
        return SQLiteDatabase(normalised, synchronous=sqlite_synchronous, readers=min(pool_size, 8))
    return PostgresDatabase(normalised, pool_size=pool_size)


def _timed(name: str, started: float) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("txn %s took %.2f ms", name, (time.perf_counter() - started) * 1000)


class SQLiteDatabase:
    dialect = "sqlite"

    def __init__(self, url: str, *, synchronous: str, readers: int) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("sqlite synchronous must be FULL, NORMAL or EXTRA")
        create_private_file(url)
        self._writer = self._engine(url, synchronous, begin="BEGIN IMMEDIATE", size=1, autocheckpoint=False)
        self._reader = self._engine(url, synchronous, begin="BEGIN", size=readers)
        path = make_url(url).database or ""
        self._checkpointer = Checkpointer(
            lambda: sqlite3.connect(path, timeout=_SQLITE_BUSY_SECONDS, check_same_thread=False)
        )
        self._write_thread = WriterThread(self._writer, checkpointer=self._checkpointer)
        self._read_threads = ThreadPoolExecutor(readers, thread_name_prefix="sitecomms-sqlite-reader")

    @staticmethod
    def _engine(url: str, synchronous: str, *, begin: str, size: int, autocheckpoint: bool = True) -> Engine:
        engine = create_engine(
            url,
            poolclass=QueuePool,
            pool_size=size,
            max_overflow=0,
            connect_args={"check_same_thread": False, "timeout": _SQLITE_BUSY_SECONDS},
            hide_parameters=True,  # a driver error's text reaches logs: no message content or hashes in it
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            use_wal(dbapi_connection)
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_SECONDS * 1000)}")
            cursor.execute("PRAGMA temp_store=MEMORY")  # RETURNING's row buffer: ~10 µs less per send
            if not autocheckpoint:  # the Checkpointer thread does it (writer.py)
                cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: SAConnection) -> None:
            conn.exec_driver_sql(begin)

        return engine

    @staticmethod
    def _run(engine: Engine, name: str, fn: Callable[..., T], args: Any, kwargs: Any) -> T:
        started = time.perf_counter()
        try:
            with engine.begin() as conn:
                return fn(conn, *args, **kwargs)
        except Exception as exc:
            raise_translated(exc, name)
        finally:
            _timed(name, started)

    async def read(self, name: str, fn: TxnFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_threads, self._run, self._reader, name, fn, args, kwargs)

    async def write(self, name: str, fn: TxnFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        result: T = await self._write_thread.submit(name, fn, args, kwargs)
        return result

    async def write_background(self, name: str, fn: TxnFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        result: T = await self._write_thread.submit(name, fn, args, kwargs, background=True)
        return result

    @property
    def checkpointer(self) -> Checkpointer:
        return self._checkpointer

    @property
    def writer_batches(self) -> int:
        """Commits of the writer thread so far: fewer than writes when group commit worked."""
        return self._write_thread.batches

    async def ping(self) -> None:
        await self.read("ping", lambda conn: _PING.scalar(conn))

    def connections_in_use(self) -> int:
        return int(self._reader.pool.checkedout()) + int(self._writer.pool.checkedout())  # type: ignore[attr-defined]

    def observe_commits(self, observer: Callable[[int, float], None]) -> None:
        self._write_thread.on_commit = observer

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._write_thread.stop()
        self._checkpointer.stop()
        self._read_threads.shutdown(wait=True)
        self._writer.dispose()
        self._reader.dispose()


class PostgresDatabase:
    """Transactions on an asyncpg pool, each function in a greenlet of its own (pg.py).

    BEGIN and COMMIT are two of a short transaction's three or four round trips (~75 µs of
    CPU here, and as much in PostgreSQL), so they are left out where they change nothing. A
    read declared `one_read` (pg.py) runs its one statement alone: one statement is one
    snapshot. A write declared `one_change` runs each statement alone: under READ COMMITTED
    each statement sees what is committed when it starts, in a transaction or not, and a single
    change is atomic on its own. The connection holds each function to its declaration
    (`PgConnection`). Every other read is a `REPEATABLE READ READ ONLY` transaction and every
    other write a READ COMMITTED one. SQLite ignores the declarations.

    The pool opens connections as they are needed, up to `2 * pool_size` (what SQLAlchemy's
    pool allowed with its overflow), and does not reset a connection it gets back: the store
    sets no session state, and each transaction ends in COMMIT or ROLLBACK."""

    dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int) -> None:
        self._dsn = _parse_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._max = 2 * pool_size
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def _connections(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=0,
                        max_size=self._max,
                        statement_cache_size=_PREPARED_PER_CONNECTION,
                        reset=_keep,
                    )
        return self._pool

    async def _run(self, fn: Callable[..., T], args: Any, kwargs: Any, mode: Mode, *, readonly: bool = False) -> T:
        """`fn` on a connection of the pool; again on another if the connection was lost before
        anything could have committed (e.g. a pooled connection the server had ended)."""
        for attempt in range(1, _LOST_CONNECTION_ATTEMPTS + 1):
            try:
                pool = await self._connections()
                async with pool.acquire(timeout=_ACQUIRE_SECONDS) as raw:
                    conn = PgConnection(raw, mode)
                    try:
                        try:
                            return await self._call(conn, fn, args, kwargs, readonly)
                        except DRIVER_ERRORS as error:  # BEGIN's, COMMIT's
                            raise driver_error(error, None, raw) from error
                    except DBAPIError as error:
                        if connection_lost(error):
                            discard(raw)
                        raise
            except DRIVER_ERRORS as error:  # connecting's
                raise driver_error(error, None) from error
            except DBAPIError as error:  # raised on `conn`: acquiring raises none
                if not (connection_lost(error) and conn.retry_safe and attempt < _LOST_CONNECTION_ATTEMPTS):
                    raise
                log.info("retrying on a new connection after a lost one: %s", error.orig)
        raise AssertionError("unreachable")

    @staticmethod
    async def _call(conn: PgConnection, fn: Callable[..., T], args: Any, kwargs: Any, readonly: bool) -> T:
        if conn.mode is not Mode.TRANSACTION:
            result: T = await greenlet_spawn(fn, conn, *args, **kwargs)
            return result
        isolation = {"isolation": "repeatable_read", "readonly": True} if readonly else {}
        async with conn.raw.transaction(**isolation):
            result = await greenlet_spawn(fn, conn, *args, **kwargs)
            conn.returned = True
            return result

    async def read(self, name: str, fn: TxnFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        started = time.perf_counter()
        mode = Mode.ONE_READ if mode_of(fn) is Mode.ONE_READ else Mode.TRANSACTION
        try:
            return await self._run(fn, args, kwargs, mode, readonly=True)
        except Exception as exc:
            raise_translated(exc, name)
        finally:
            _timed(name, started)

    async def write(self, name: str, fn: TxnFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        mode = Mode.ONE_CHANGE if mode_of(fn) is Mode.ONE_CHANGE else Mode.TRANSACTION
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            started = time.perf_counter()
            try:
                return await self._run(fn, args, kwargs, mode)
            except Exception as exc:
                sqlstate = getattr(exc.orig, "sqlstate", None) if isinstance(exc, DBAPIError) else None
                if sqlstate in _RETRYABLE_SQLSTATES and attempt < _WRITE_ATTEMPTS:
                    log.info("txn %s: retrying after %s (attempt %d)", name, sqlstate, attempt)
                    continue
                raise_translated(exc, name)
            finally:
                _timed(name, started)
        raise AssertionError("unreachable")

    async def write_background(self, name: str, fn: TxnFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.write(name, fn, *args, **kwargs)

    async def ping(self) -> None:
        await self.read("ping", lambda conn: _PING.scalar(conn))

    def connections_in_use(self) -> int:
        pool = self._pool
        return 0 if pool is None else int(pool.get_size() - pool.get_idle_size())

    def observe_commits(self, observer: Callable[[int, float], None]) -> None:
        return None  # no single writer: PostgreSQL's commits are the server's own (pg_stat_database)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


async def _keep(_connection: asyncpg.Connection) -> None:
    """A connection back in the pool needs no reset (see PostgresDatabase): not the four
    statements asyncpg would run on each return. (The pool still rolls back a transaction left
    open, e.g. by a cancellation in COMMIT, before it calls this: asyncpg's `Connection._reset`.)"""
