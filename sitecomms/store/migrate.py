"""Applying the Alembic migrations to a database URL, on either engine.

A database this version cannot migrate is a `MigrationError` whose text is for the operator:
one at a revision it does not know (left by a newer version of SiteComms, after a downgrade of
the software without a restore), or a file that is not an SQLite database at all.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import cast

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection as SaConnection
from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import DatabaseError

from sitecomms.store import blocking
from sitecomms.store.database import Connection
from sitecomms.store.errors import StoreError
from sitecomms.store.statements import Statement

_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 0x5C_C0_33_A1  # the PostgreSQL advisory lock key held while migrating
_LOCK = Statement("migrate.lock", select(func.pg_advisory_xact_lock(bindparam("key"))), dialects=("postgresql",))


class MigrationError(StoreError):
    """The database cannot be migrated by this version of SiteComms; the text says why."""


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
    current = MigrationContext.configure(cast(SaConnection, conn)).get_current_heads()  # blocking.run's: SQLAlchemy's
    unknown = sorted(set(current) - known_revisions())
    if unknown:
        raise MigrationError(
            f"the database is at migration revision {', '.join(map(repr, unknown))}, which this version of"
            f" SiteComms (head {head_revision()!r}) does not know: it was made by a newer version; run that"
            " version, or restore a backup taken before the upgrade (docs/deployment.md, section Upgrades"
            " and migrations)"
        )
    config = alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` up to `revision` (blocking; call before serving); MigrationError
    when this version cannot (see the module doc)."""
    try:
        blocking.run(url, "migrate", _upgrade_on, revision)
    except DatabaseError as exc:
        if getattr(exc.orig, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB:
            raise MigrationError(f"the file is not an SQLite database ({exc.orig})") from exc
        raise


async def upgrade_async(url: str, revision: str = "head") -> None:
    """The same as `upgrade`, from inside a running event loop."""
    await asyncio.to_thread(upgrade, url, revision)


def known_revisions() -> frozenset[str]:
    """Every migration revision this version of SiteComms knows (the ones it can upgrade from)."""
    return frozenset(script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions())
