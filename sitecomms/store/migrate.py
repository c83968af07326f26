"""Applying the Alembic migrations to a database URL, on either engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import bindparam, func, select

from sitecomms.store import blocking
from sitecomms.store.database import Connection
from sitecomms.store.statements import Statement

_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 0x5C_C0_33_A1  # the PostgreSQL advisory lock key held while migrating
_LOCK = Statement("migrate.lock", select(func.pg_advisory_xact_lock(bindparam("key"))), dialects=("postgresql",))


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _upgrade_on(conn: Connection, revision: str) -> None:
    if conn.dialect.name == "postgresql":
        # Several `sitecomms serve` processes starting at once on a fresh database would all
        # run the first migration, and all but one fail (duplicate table). One at a time: the
        # others wait here (the lock is held to COMMIT), then find the database at head.
        _LOCK.rows(conn, key=_MIGRATION_LOCK)
    config = alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` up to `revision` (blocking; call before serving)."""
    blocking.run(url, "migrate", _upgrade_on, revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    """The same as `upgrade`, from inside a running event loop."""
    await asyncio.to_thread(upgrade, url, revision)


def known_revisions() -> frozenset[str]:
    """Every migration revision this version of SiteComms knows (the ones it can upgrade from)."""
    return frozenset(script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions())
