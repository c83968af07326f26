"""Migrations build exactly the schema the code declares, on both engines, and are re-runnable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from sitecomms.store import blocking, migrate
from sitecomms.store.database import open_database
from sitecomms.store.schema import metadata
from tests.servers import BACKENDS, fresh_database
from tests.sql import execute


def _diff(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata))


def _diff_of(url: str) -> list[object]:
    """Alembic compares on SQLAlchemy's connection: the CLI's (`blocking.run`), not the server's."""
    return blocking.run(url, "test_diff", _diff)


def _revision_of(url: str) -> str | None:
    return blocking.run(url, "test_revision", _revision)


def _revision(conn: Connection) -> str | None:
    return execute(conn, text("SELECT version_num FROM alembic_version")).scalar()


async def test_migrations_match_the_declared_schema(database_url: str) -> None:
    await migrate.upgrade_async(database_url)  # already at head: a second run changes nothing
    db = open_database(database_url, pool_size=1)
    try:
        assert await asyncio.to_thread(_diff_of, database_url) == []
        assert await db.read("test_revision", _revision) == migrate.head_revision()
    finally:
        await db.close()


async def test_a_fresh_sqlite_file_is_migrated_from_nothing(sqlite_url: str) -> None:
    await migrate.upgrade_async(sqlite_url)
    db = open_database(sqlite_url, pool_size=1)
    try:
        assert await asyncio.to_thread(_diff_of, sqlite_url) == []
        journal = await db.read("test_wal", lambda conn: conn.exec_driver_sql("PRAGMA journal_mode").scalar())
        assert journal == "wal"
        fks = await db.read("test_fk", lambda conn: conn.exec_driver_sql("PRAGMA foreign_keys").scalar())
        assert fks == 1
    finally:
        await db.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_0003_keeps_every_row_and_makes_users_undeletable(backend: str, tmp_path: Path) -> None:
    """Upgrading a database in use: SQLite rebuilds four tables to change their foreign keys."""
    async with fresh_database(backend, tmp_path) as url:
        await _upgrade_a_database_in_use(url)


async def _upgrade_a_database_in_use(database_url: str) -> None:
    await migrate.upgrade_async(database_url, "0002")
    assert await asyncio.to_thread(_revision_of, database_url) == "0002"
    now = "2026-01-02 03:04:05"
    seed = [
        f"INSERT INTO orgs (id, name, created_at) VALUES ('o1', 'Org', '{now}')",
        "INSERT INTO org_streams (org_id, position) VALUES ('o1', 4)",
        "INSERT INTO users (id, org_id, email, display_name, role, password_hash, created_at, position) "
        f"VALUES ('m1', 'o1', 'm@x.example', 'Maya', 'medic', 'h', '{now}', 1)",
        "INSERT INTO conversations (id, org_id, type, medic_id, created_at, position) "
        f"VALUES ('c1', 'o1', 'direct', 'm1', '{now}', 2)",
        "INSERT INTO messages (id, org_id, conversation_id, sender_id, content, idempotency_key, created_at, position) "
        f"VALUES ('x1', 'o1', 'c1', 'm1', 'kept', 'k1', '{now}', 3)",
        "INSERT INTO read_status (conversation_id, user_id, org_id, last_read_position, last_read_at, position) "
        f"VALUES ('c1', 'm1', 'o1', 3, '{now}', 4)",
    ]
    db = open_database(database_url, pool_size=1)
    try:
        await db.write("test_seed", lambda conn: [execute(conn, text(statement)) for statement in seed])
    finally:
        await db.close()
    await migrate.upgrade_async(database_url)
    db = open_database(database_url, pool_size=1)
    try:
        counts = await db.read(
            "test_counts",
            lambda conn: [
                execute(conn, text(f"SELECT count(*) FROM {table}")).scalar()
                for table in ("users", "conversations", "messages", "read_status")
            ],
        )
        assert counts == [1, 1, 1, 1]
        active = await db.read("test_active", lambda conn: execute(conn, text("SELECT active FROM users")).scalar())
        assert active in (True, 1)
        with pytest.raises(IntegrityError):
            await db.write("test_delete", lambda conn: execute(conn, text("DELETE FROM users WHERE id = 'm1'")))
        assert await asyncio.to_thread(_diff_of, database_url) == []
    finally:
        await db.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_database_from_a_newer_version_is_refused_and_left_as_it_is(backend: str, tmp_path: Path) -> None:
    """Running an older release on a database a newer one migrated (a downgrade without a restore)."""
    async with fresh_database(backend, tmp_path) as url:
        await migrate.upgrade_async(url)
        newer = text("UPDATE alembic_version SET version_num = '9999'")  # left by a newer release
        await asyncio.to_thread(blocking.run, url, "test_newer", lambda conn: execute(conn, newer))
        with pytest.raises(migrate.MigrationError, match=r"revision '9999'.*does not know.*newer version"):
            await migrate.upgrade_async(url)
        assert await asyncio.to_thread(_revision_of, url) == "9999"


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "sitecomms.db"
    junk.write_bytes(b"not a database at all " * 400)
    with pytest.raises(migrate.MigrationError, match="not an SQLite database"):
        migrate.upgrade(f"sqlite:///{junk}")
    assert junk.read_bytes() == b"not a database at all " * 400
