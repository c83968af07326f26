"""Backups and restores of SQLite files (store/backup.py), in process: the copy is one snapshot
taken while another connection keeps committing, the files are private, and every refusal
(PostgreSQL, an existing target, a file that is not a SiteComms database, an unknown revision,
a database still open elsewhere) leaves everything as it was."""

from __future__ import annotations

import os
import sqlite3
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from sitecomms.store import backup as backups
from sitecomms.store import migrate

PAD = "x" * 1000  # each row about a quarter of a page: the copy takes many small steps


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def rows(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM login_throttle").fetchone()[0])


def add_rows(conn: sqlite3.Connection, first: int, count: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO login_throttle (key, failures, last_failure_at, blocked_until) VALUES (?, 1, ?, ?)",
        [(f"{PAD}{n}", "2026-01-01 00:00:00", "2026-01-01 00:00:00") for n in range(first, first + count)],
    )
    conn.execute("COMMIT")


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A migrated SiteComms database in WAL mode (as a server leaves it), with 2,000 padded rows."""
    path = tmp_path / "sitecomms.db"
    migrate.upgrade(url_of(path))
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        add_rows(conn, 0, 2000)
    return path


class Committer:
    """Another connection committing one row at a time, in a thread, until stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.committed = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with closing(sqlite3.connect(self.path, isolation_level=None, timeout=5)) as conn:
            n = 1_000_000
            while not self._stop.is_set():
                add_rows(conn, n, 1)
                n += 1
                with self._changed:
                    self.committed += 1
                    self._changed.notify_all()

    def wait_beyond(self, count: int, timeout: float = 10.0) -> int:
        """Until more than `count` rows are committed (bounded); how many are."""
        with self._changed:
            assert self._changed.wait_for(lambda: self.committed > count, timeout), "the committer is stuck"
            return self.committed


@contextmanager
def committing(path: Path) -> Iterator[Committer]:
    committer = Committer(path)
    committer._thread.start()
    try:
        yield committer
    finally:
        committer._stop.set()
        committer._thread.join(timeout=10)
    assert not committer._thread.is_alive()


def test_a_stepped_backup_is_one_snapshot_while_another_connection_commits(database: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy.db"
    at_steps: list[int] = []
    left = [2**31]
    with committing(database) as committer:

        def progress(remaining: int, _total: int) -> None:
            assert remaining <= left[-1], "the copy started over"  # fails at once, not after a livelock
            left.append(remaining)
            # between the first ten steps, wait for the other connection to commit once more
            at_steps.append(committer.wait_beyond(at_steps[-1]) if 0 < len(at_steps) < 10 else committer.committed)

        counted = committer.committed
        before = rows(database)
        copied = backups.backup(url_of(database), target, step_pages=8, progress=progress)
        after = rows(database)
    assert copied.steps > 20 and copied.restarts == 0, copied
    assert at_steps[:10] == sorted(set(at_steps[:10])), "commits between the steps of one copy"
    assert copied.checked.ok and copied.checked.revision == migrate.head_revision()
    in_copy = rows(target)
    # one instant, before the first step: none of the commits made between the steps is in it
    # (+1: a commit may land between `committed` and `before` being read)
    assert before <= in_copy <= before + (at_steps[0] - counted) + 1 < after, (before, in_copy, at_steps, after)
    assert mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".copy.db")] == [], "no temporary left"
    assert not Path(f"{target}-wal").exists() and not Path(f"{target}-journal").exists(), "one self-contained file"
    with closing(sqlite3.connect(target)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_postgresql_is_refused_with_the_pg_dump_procedure(tmp_path: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/sitecomms"
    with pytest.raises(backups.BackupError, match=r"pg_dump.*docs/deployment.md"):
        backups.backup(url, tmp_path / "copy.db")
    with pytest.raises(backups.BackupError, match="pg_restore"):
        backups.restore(url, tmp_path / "copy.db", known_revisions=migrate.known_revisions())
    assert list(tmp_path.iterdir()) == []


def test_an_existing_target_is_replaced_only_with_force(database: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy.db"
    target.write_bytes(b"last night's backup")
    with pytest.raises(backups.BackupError, match=r"exists.*--force"):
        backups.backup(url_of(database), target)
    assert target.read_bytes() == b"last night's backup"
    copied = backups.backup(url_of(database), target, force=True)
    assert copied.checked.ok and rows(target) == 2000 and mode(target) == 0o600


@pytest.mark.parametrize(
    "name",
    ["sitecomms.db", "sitecomms.db-wal", "sitecomms.db-shm", "sitecomms.db-journal", "link.db", "hardlink.db"],
)
def test_a_backup_never_replaces_one_of_the_database_s_own_files(database: Path, tmp_path: Path, name: str) -> None:
    """`backup live.db-wal --force` once put a database file in place of the live WAL: the server
    went on writing the old one, every new connection read the new one ("malformed")."""
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        add_rows(conn, 10_000, 1)  # in the WAL only, as a serving process leaves it
        (tmp_path / "link.db").symlink_to(database)
        (tmp_path / "hardlink.db").hardlink_to(database)
        wal = database.with_name("sitecomms.db-wal")
        before = wal.read_bytes()
        assert before, "the database has a WAL"
        with pytest.raises(backups.BackupError, match="the database's own file"):
            backups.backup(url_of(database), tmp_path / name, force=True)
        assert wal.read_bytes() == before and not database.with_name("sitecomms.db-journal").exists()
    finally:
        conn.close()
    assert rows(database) == 2001
    with closing(sqlite3.connect(database)) as check:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert not list(tmp_path.glob(".*partial"))


def test_a_backup_never_replaces_a_directory_or_a_special_file(database: Path, tmp_path: Path) -> None:
    directory = tmp_path / "backups"
    (directory / "inside").mkdir(parents=True)
    with pytest.raises(backups.BackupError, match="is a directory"):
        backups.backup(url_of(database), directory, force=True)
    assert (directory / "inside").is_dir()
    fifo = tmp_path / "pipe"  # a device stands for itself (run as root, `backup /dev/null --force` replaced it)
    os.mkfifo(fifo)
    with pytest.raises(backups.BackupError, match="not a regular file"):
        backups.backup(url_of(database), fifo, force=True)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert not list(tmp_path.glob(".*partial"))


def test_a_backup_into_a_directory_it_cannot_write_is_one_clear_refusal(database: Path) -> None:
    unwritable = Path("/sys")  # read-only even for root
    try:
        tempfile.mkstemp(dir=unwritable)
    except OSError:
        pass
    else:
        pytest.skip("/sys is writable here")
    with pytest.raises(backups.BackupError, match=r"cannot write in /sys: Permission denied"):
        backups.backup(url_of(database), unwritable / "copy.db")


def test_a_missing_database_is_not_created_by_a_backup(tmp_path: Path) -> None:
    with pytest.raises(backups.BackupError, match="no database file"):
        backups.backup(url_of(tmp_path / "absent.db"), tmp_path / "copy.db")
    assert list(tmp_path.iterdir()) == []


def not_sqlite(path: Path) -> Path:
    path.write_bytes(b"PK\x03\x04 this is a zip file, not a database" * 100)
    return path


def other_sqlite(path: Path) -> Path:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.commit()
    return path


@pytest.mark.parametrize(
    ("make", "complaint"),
    [
        (not_sqlite, "is not an SQLite database"),
        (other_sqlite, "is not a SiteComms database"),
        (lambda path: path, "no file"),
    ],
    ids=["not sqlite", "another sqlite database", "missing"],
)
def test_restore_refuses_a_file_that_is_not_a_sitecomms_database(
    database: Path, tmp_path: Path, make: object, complaint: str
) -> None:
    assert callable(make)
    source = make(tmp_path / "candidate.db")
    before = database.read_bytes()
    with pytest.raises(backups.BackupError, match=complaint):
        backups.restore(url_of(database), source, known_revisions=migrate.known_revisions())
    assert database.read_bytes() == before
    assert not list(tmp_path.glob("*.before-restore-*"))


def test_restore_refuses_a_revision_it_does_not_know(database: Path, tmp_path: Path) -> None:
    copy = backups.backup(url_of(database), tmp_path / "copy.db").path
    with closing(sqlite3.connect(copy)) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'f00dfacef00d'")
        conn.commit()
    with pytest.raises(backups.BackupError, match=r"'f00dfacef00d'.*does not know"):
        backups.restore(url_of(database), copy, known_revisions=migrate.known_revisions())


def test_restore_refuses_while_another_connection_has_the_database_open(database: Path, tmp_path: Path) -> None:
    copy = backups.backup(url_of(database), tmp_path / "copy.db").path
    with closing(sqlite3.connect(database, isolation_level=None)) as server:
        server.execute("SELECT count(*) FROM orgs").fetchall()  # open and idle, as a server's pool holds it
        with pytest.raises(backups.BackupError, match="in use"):
            backups.restore(url_of(database), copy, known_revisions=migrate.known_revisions())
        assert server.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert not list(tmp_path.glob("*.before-restore-*"))


def test_restore_swaps_the_backup_in_and_keeps_the_replaced_file(database: Path, tmp_path: Path) -> None:
    copy = backups.backup(url_of(database), tmp_path / "copy.db").path
    with closing(sqlite3.connect(database, isolation_level=None)) as conn:
        add_rows(conn, 5000, 10)  # after the backup
    restored = backups.restore(url_of(database), copy, known_revisions=migrate.known_revisions())
    assert rows(database) == 2000 and mode(database) == 0o600
    assert restored.replaced is not None and restored.replaced.name.startswith("sitecomms.db.before-restore-")
    assert rows(restored.replaced) == 2010, "the replaced database is kept whole, its WAL folded in"
    assert not Path(f"{database}-wal").exists()
    assert restored.checked.ok and restored.checked.revision == migrate.head_revision()
    assert rows(copy) == 2000, "the backup itself is left as it was"
