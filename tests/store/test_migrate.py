"""Migrations build exactly the schema the code declares, on both engines, and are re-runnable."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text

from sitecomms.store import migrate
from sitecomms.store.database import open_database
from sitecomms.store.schema import metadata


def _diff(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata))


def _revision(conn: Connection) -> str | None:
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


async def test_migrations_match_the_declared_schema(database_url: str) -> None:
    await migrate.upgrade_async(database_url)  # already at head: a second run changes nothing
    db = open_database(database_url, pool_size=1)
    try:
        assert await db.read("test_diff", _diff) == []
        assert await db.read("test_revision", _revision) == migrate.head_revision()
    finally:
        await db.close()


async def test_a_fresh_sqlite_file_is_migrated_from_nothing(sqlite_url: str) -> None:
    await migrate.upgrade_async(sqlite_url)
    db = open_database(sqlite_url, pool_size=1)
    try:
        assert await db.read("test_diff", _diff) == []
        journal = await db.read("test_wal", lambda conn: conn.exec_driver_sql("PRAGMA journal_mode").scalar())
        assert journal == "wal"
        fks = await db.read("test_fk", lambda conn: conn.exec_driver_sql("PRAGMA foreign_keys").scalar())
        assert fks == 1
    finally:
        await db.close()
