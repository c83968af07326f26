"""SQLite files are created readable by their owner only (0600), with their -wal and -shm."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from pathlib import Path

import pytest
from sqlalchemy import Connection

from sitecomms.store import blocking, migrate
from sitecomms.store.database import create_private_file, open_database, sqlite_file

TIMEOUT = 30.0


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write(conn: Connection) -> None:
    conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    conn.exec_driver_sql("INSERT INTO t VALUES (1)")


async def test_a_new_database_file_and_its_wal_are_for_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    db = open_database(f"sqlite:///{path}", pool_size=1)
    try:
        assert mode(path) == 0o600
        await asyncio.wait_for(db.write("write", _write), TIMEOUT)
        assert mode(path.with_name("fresh.db-wal")) == 0o600
        assert mode(path.with_name("fresh.db-shm")) == 0o600
    finally:
        await asyncio.wait_for(db.close(), TIMEOUT)


def test_migrating_a_new_database_creates_it_for_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "migrated.db"
    migrate.upgrade(f"sqlite:///{path}")
    assert mode(path) == 0o600
    blocking.run(f"sqlite:///{path}", "write", _write)
    assert mode(path) == 0o600


def test_an_existing_file_keeps_the_mode_the_operator_gave_it(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    path.touch()
    path.chmod(0o640)
    blocking.run(f"sqlite:///{path}", "write", _write)
    assert mode(path) == 0o640


def test_a_missing_directory_is_left_for_sqlite_to_report(tmp_path: Path) -> None:
    create_private_file(f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}")  # no exception of its own
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///./sitecomms.db", Path("sitecomms.db")),
        ("sqlite:////var/lib/site.db", Path("/var/lib/site.db")),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("sqlite:///file:site.db?mode=ro&uri=true", None),
        ("postgresql://u@127.0.0.1:5432/db", None),
    ],
)
def test_sqlite_file_names_the_file_of_a_file_url_only(url: str, expected: Path | None) -> None:
    assert sqlite_file(url) == expected


def _journal_mode(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def test_the_migrations_leave_a_new_file_in_wal_mode(tmp_path: Path) -> None:
    """So that a server's connections, opening at once on it, find nothing to convert: several
    connections converting one file at the same moment get SQLITE_BUSY without waiting (a
    server's first write once failed so in CI, on a file the migrations had left in the
    rollback-journal mode)."""
    path = tmp_path / "migrated.db"
    migrate.upgrade(f"sqlite:///{path}")
    assert _journal_mode(path) == "wal"
