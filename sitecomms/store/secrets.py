"""Server-wide secrets kept in the database, so every process on one database shares them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import Connection, create_engine, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from sitecomms.store.database import normalise_url
from sitecomms.store.schema import server_secrets


def get_or_create_secret(conn: Connection, name: str, make: Callable[[], str]) -> str:
    found = conn.execute(select(server_secrets.c.value).where(server_secrets.c.name == name)).scalar()
    if found is not None:
        return str(found)
    value = make()
    try:
        with conn.begin_nested():
            conn.execute(insert(server_secrets).values(name=name, value=value))
    except IntegrityError:  # another process made it first
        return str(conn.execute(select(server_secrets.c.value).where(server_secrets.c.name == name)).scalar_one())
    return value


def ensure_secret(url: str, name: str, make: Callable[[], str]) -> str:
    """Blocking: read the named secret from the database at `url`, creating it if absent."""
    normalised = normalise_url(url)
    if normalised.startswith("sqlite"):
        engine = create_engine(normalised)
        try:
            with engine.begin() as conn:
                return get_or_create_secret(conn, name, make)
        finally:
            engine.dispose()
    return asyncio.run(_ensure_async(normalised, name, make))


async def _ensure_async(url: str, name: str, make: Callable[[], str]) -> str:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(get_or_create_secret, name, make)
    finally:
        await engine.dispose()
