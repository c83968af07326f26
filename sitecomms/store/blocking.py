"""Blocking database work outside a server's event loop: the CLI, start-up, migrations.

`run(url, name, fn, *args)` opens an engine for `url` just for this call, runs `fn(conn, *args)`
in one transaction named `name` (as `Database.write` names its own), commits, and disposes of
the engine. On SQLite that is a plain synchronous
engine; PostgreSQL has only an asyncio driver here (asyncpg), so the same is done under
`asyncio.run`, with `fn` on SQLAlchemy's synchronous facade. A new SQLite file is created
with mode 0600 first (`database.create_private_file`) and put in WAL mode (`database.use_wal`),
as the server's connections would. Failures come out translated as
every store failure (`errors.translate`): `Unavailable` when the database cannot be used.
Call it from a thread without a running event loop (`asyncio.to_thread` from inside one).
"""

from __future__ import annotations

import asyncio
from typing import ParamSpec, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.ext.asyncio import create_async_engine

from sitecomms.store.database import TxnFn, create_private_file, normalise_url, use_wal
from sitecomms.store.errors import raise_translated

P = ParamSpec("P")
T = TypeVar("T")


def run(url: str, name: str, fn: TxnFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(conn, *args, **kwargs)` in one transaction on the database at `url`; its result."""
    normalised = normalise_url(url)
    try:
        if normalised.startswith("sqlite"):
            return _run_sqlite(normalised, fn, *args, **kwargs)
        return asyncio.run(_run_async(normalised, fn, *args, **kwargs))
    except Exception as exc:
        raise_translated(exc, name)


def _run_sqlite(url: str, fn: TxnFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    create_private_file(url)
    engine = create_engine(url, hide_parameters=True)
    event.listen(engine, "connect", lambda dbapi_connection, _record: use_wal(dbapi_connection))
    try:
        with engine.begin() as conn:
            return fn(conn, *args, **kwargs)
    finally:
        engine.dispose()


async def _run_async(url: str, fn: TxnFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    engine = create_async_engine(url, hide_parameters=True)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn, *args, **kwargs)
    finally:
        await engine.dispose()
