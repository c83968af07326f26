"""`blocking.run`: one transaction on either engine, outside an event loop (CLI and start-up)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Connection, insert, select, text

from sitecomms.store import blocking, migrate, schema
from sitecomms.store.database import open_database
from sitecomms.store.types import utcnow
from tests.sql import execute
from tests.support import create_postgres_database, drop_postgres_database

TIMEOUT = 60.0


def _put(conn: Connection, name: str, value: str) -> str:
    execute(conn, insert(schema.orgs).values(id=name[:36], name=value, created_at=utcnow()))
    return value


def _put_then_fail(conn: Connection, name: str) -> None:
    _put(conn, name, "never")
    raise LookupError("after the insert")


def _get(conn: Connection, name: str) -> str | None:
    found = execute(conn, select(schema.orgs.c.name).where(schema.orgs.c.id == name[:36])).scalar()
    return None if found is None else str(found)


async def test_the_work_commits_or_rolls_back_as_one_transaction(database_url: str) -> None:
    await migrate.upgrade_async(database_url)
    kept, undone = f"kept-{uuid.uuid4().hex}", f"undone-{uuid.uuid4().hex}"
    assert await asyncio.to_thread(blocking.run, database_url, "put", _put, kept, "v") == "v"
    with pytest.raises(LookupError):
        await asyncio.to_thread(blocking.run, database_url, "put_then_fail", _put_then_fail, undone)
    db = open_database(database_url, pool_size=1)  # seen from another connection: committed or not at all
    try:
        assert await db.read("get", _get, kept) == "v"
        assert await db.read("get", _get, undone) is None
    finally:
        await db.close()


@pytest.fixture
async def empty_postgres() -> AsyncIterator[str]:
    name = f"sitecomms_test_{uuid.uuid4().hex[:10]}"
    yield await create_postgres_database(name)
    await drop_postgres_database(name)


@pytest.mark.postgres
async def test_processes_migrating_a_fresh_postgresql_at_once_take_turns(empty_postgres: str) -> None:
    """The advisory lock `migrate` takes through `blocking.run`: no one fails on a duplicate table."""
    await asyncio.wait_for(asyncio.gather(*(migrate.upgrade_async(empty_postgres) for _ in range(4))), TIMEOUT)
    db = open_database(empty_postgres, pool_size=1)
    try:
        assert (
            await db.read("head", lambda conn: execute(conn, text("SELECT version_num FROM alembic_version")).scalar())
            == migrate.head_revision()
        )
    finally:
        await db.close()
