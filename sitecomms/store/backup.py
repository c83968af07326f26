"""Copies of an SQLite database taken while it serves, and putting one back.

`backup(url, target)` copies the database with SQLite's online backup API, in steps of
`step_pages`, from one read snapshot: the copying connection opens a read transaction first
and holds it until the last step. Under WAL (the server's journal mode) a reader never blocks
the writer, so the server's sends go on throughout; and because the snapshot does not move, the
copy is exactly the database as it was at that instant (every transaction committed before it,
none after), and the backup never restarts. (Without the held snapshot, SQLite restarts a
stepped backup whenever another connection commits: under a steady send load it might never
finish.) The price is that checkpoints cannot pass the snapshot while it is held, so the WAL
grows for the duration. The copy is written to a private temporary file beside the target
(mode 0600, as `database.create_private_file` makes the database), put in rollback-journal
mode so it is one self-contained file, checked with `PRAGMA integrity_check`, and only then
moved to the target name (never over an existing file unless `force`, and never, even then,
over a directory, a device or the database's own files: `refuse_overwriting`).

`restore(url, source)` checks that `source` is an SQLite database with SiteComms' tables at a
known migration revision (`known_revisions`), copies it beside the database, checks the copy's
integrity, and swaps it in, keeping the replaced file as `<db>.before-restore-<UTC time>`. It
refuses while another connection has the database open: the server's connections run in WAL
mode, and leaving WAL (which the restore does to the old file, so it stands alone without its
-wal file) needs every other connection closed, which SQLite checks with its file locks. That
detection holds for processes on this machine (file locks over a network filesystem are not to
be trusted); a server starting in the instant between the check and the swap is not stopped.

PostgreSQL databases are refused with a pointer to pg_dump (docs/deployment.md, "Backups").
Every refusal or failure is a `BackupError` whose text is for the operator.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sitecomms.store.database import sqlite_file
from sitecomms.store.errors import StoreError

__all__ = [
    "STEP_PAGES",
    "BackupError",
    "Checked",
    "Copied",
    "Restored",
    "backup",
    "check",
    "database_files",
    "private_temporary",
    "put_in_place",
    "refuse_overwriting",
    "restore",
]

STEP_PAGES = 1024  # pages per backup step (4 MiB at SQLite's default page size)
POSTGRES_HINT = (
    "this is a PostgreSQL database: back it up with pg_dump and restore it with pg_restore"
    " (docs/deployment.md, section Backups); `sitecomms backup` and `restore` handle SQLite files only"
)
# Tables every SiteComms database has had since the first migration.
_CORE_TABLES = frozenset({"alembic_version", "orgs", "org_streams", "users", "conversations", "messages"})
_LOCK_TIMEOUT = 5.0  # seconds to wait for the source's lock (the server's busy_timeout)
_COMPANIONS = ("-wal", "-shm", "-journal")  # the files SQLite keeps beside a database, by its name

Progress = Callable[[int, int], None]  # (pages remaining, pages in all), after each step


class BackupError(StoreError):
    """A backup or restore refused or failed; the text says why, for the operator."""


@dataclass(frozen=True, slots=True)
class Checked:
    """What `check` found in a database file."""

    revision: str
    integrity: str  # "ok", or integrity_check's first complaints
    size: int  # bytes

    @property
    def ok(self) -> bool:
        return self.integrity == "ok"


@dataclass(frozen=True, slots=True)
class Copied:
    """A backup written: where, how many pages in how many steps, how long, and the check of it."""

    path: Path
    pages: int
    steps: int
    restarts: int  # times SQLite started the copy again (0: the snapshot held, as it should)
    seconds: float
    checked: Checked


@dataclass(frozen=True, slots=True)
class Restored:
    path: Path
    replaced: Path | None  # the file it replaced, kept; None when there was no database
    checked: Checked


def _database_path(url: str) -> Path:
    path = sqlite_file(url)
    if path is None:
        if url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres"):
            raise BackupError(POSTGRES_HINT)
        raise BackupError("only an SQLite database in a file can be backed up or restored")
    return path


def database_files(url: str) -> tuple[Path, ...]:
    """The database file of an SQLite `url` and the companions SQLite keeps beside it (`-wal`,
    `-shm`, `-journal`, present or not), symlinks resolved; () for any other database."""
    path = sqlite_file(url)
    if path is None:
        return ()
    real = path.resolve()
    return (real, *(real.with_name(real.name + suffix) for suffix in _COMPANIONS))


def refuse_overwriting(target: Path, url: str, *, force: bool, what: str) -> None:
    """BackupError unless `what` (a backup, an export) may be written at `target`: never one of the
    database's own files (a backup written over its `-wal` corrupts the live database), never over
    a directory or a device, over an existing file only with `force`, and only into a directory."""
    try:
        resolved = target.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise BackupError(f"cannot follow {target}: {exc}") from exc
    existing = target.exists() or target.is_symlink()
    for own in database_files(url):
        if resolved == own or (own.exists() and target.exists() and os.path.samefile(target, own)):
            raise BackupError(f"{target} is the database's own file {own.name}: {what} must go elsewhere")
    if existing and not force:
        raise BackupError(f"{target} exists: choose another name, or pass --force to replace it")
    if existing and not target.is_symlink() and not target.is_file():
        if target.is_dir():
            raise BackupError(f"{target} is a directory: give the path of the file to write")
        raise BackupError(f"{target} is not a regular file: it is never replaced, choose another name")
    if not target.parent.is_dir():
        raise BackupError(f"no directory {target.parent}")


@contextlib.contextmanager
def _connect(path: Path, *, read_only: bool = False, timeout: float = _LOCK_TIMEOUT) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection (autocommit: transactions are begun explicitly), closed after."""
    target = f"{path.resolve().as_uri()}?mode=ro" if read_only else str(path)
    conn = sqlite3.connect(target, uri=read_only, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        yield conn
    finally:
        conn.close()


def private_temporary(beside: Path, label: str) -> Path:
    """A new empty file, mode 0600, in the directory of `beside` (so a rename moves it in place)."""
    try:
        handle, name = tempfile.mkstemp(dir=beside.parent, prefix=f".{beside.name}.", suffix=f".{label}")
    except OSError as exc:
        raise BackupError(f"cannot write in {beside.parent}: {exc.strerror or exc}") from exc
    os.close(handle)
    return Path(name)


def put_in_place(partial: Path, target: Path, *, force: bool) -> None:
    """Move the complete file `partial` (from `private_temporary`) to `target`: over an existing
    file only with `force`, else never over one that appeared meanwhile (a link, then the
    temporary name goes); the directory is synced. BackupError naming `target` if it fails."""
    try:
        if force:
            os.replace(partial, target)
        else:
            os.link(partial, target)
            partial.unlink()
        _sync_directory(target.parent)
    except FileExistsError as exc:
        raise BackupError(f"{target} exists: choose another name, or pass --force to replace it") from exc
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror or exc}") from exc


def _sync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _inspect(conn: sqlite3.Connection, path: Path, shown: Path | None = None) -> Checked:
    """The revision and integrity of the database `conn` has open (the file `path`, named `shown`
    in complaints: the original of a copy); BackupError if it is not a SiteComms database."""
    shown = shown or path
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:  # "file is not a database", and the like
        raise BackupError(f"{shown} is not an SQLite database ({exc})") from exc
    missing = _CORE_TABLES - tables
    if missing:
        raise BackupError(f"{shown} is not a SiteComms database (no table {', '.join(sorted(missing))})")
    revisions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
    if len(revisions) != 1:
        raise BackupError(f"{shown} is not a SiteComms database (alembic_version holds {len(revisions)} rows)")
    complaints = [row[0] for row in conn.execute("PRAGMA integrity_check(20)")]
    return Checked(str(revisions[0]), "; ".join(complaints), path.stat().st_size)


def check(path: Path) -> Checked:
    """Open `path` read-only and report its migration revision and `PRAGMA integrity_check`.

    BackupError when it is missing, not an SQLite database, or not a SiteComms one."""
    if not path.is_file():
        raise BackupError(f"no file {path}")
    try:
        with _connect(path, read_only=True) as conn:
            return _inspect(conn, path)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot read {path}: {exc}") from exc


def backup(
    url: str,
    target: Path,
    *,
    force: bool = False,
    step_pages: int = STEP_PAGES,
    progress: Progress | None = None,
) -> Copied:
    """Copy the database at `url` to `target` (see the module doc); the copy's details."""
    source = _database_path(url)
    if not source.is_file():
        raise BackupError(f"no database file {source}")
    refuse_overwriting(target, url, force=force, what="the backup")
    partial = private_temporary(target, "partial")
    try:
        copied = _copy(source, partial, step_pages, progress, read_only=False)
        checked = _finish(partial, source)
        if not checked.ok:
            raise BackupError(f"the copy failed its integrity check ({checked.integrity}); the database may be damaged")
        put_in_place(partial, target, force=force)
    finally:
        partial.unlink(missing_ok=True)
    pages, steps, restarts, seconds = copied
    return Copied(target, pages, steps, restarts, seconds, checked)


def _copy(
    source: Path, destination: Path, step_pages: int, progress: Progress | None, *, read_only: bool
) -> tuple[int, int, int, float]:
    """Copy `source` into the empty file `destination` from one held snapshot: (pages, steps, restarts, s).

    A live database is opened read-write (a read-only connection to a WAL database another
    process serves cannot always map its -shm), but this connection writes nothing (query_only)."""
    seen: list[int] = []
    total = [0]

    def step(_status: int, remaining: int, pages: int) -> None:
        seen.append(remaining)
        total[0] = pages
        if progress is not None:
            progress(remaining, pages)

    started = time.perf_counter()
    try:
        with _connect(source, read_only=read_only) as src, _connect(destination) as dst:
            src.execute("PRAGMA query_only = ON")
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_master").fetchall()  # the snapshot starts here
            try:
                src.backup(dst, pages=max(1, step_pages), progress=step)
            finally:
                src.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise BackupError(f"the copy failed: {exc}") from exc
    restarts = sum(1 for before, after in itertools.pairwise(seen) if after > before)
    return total[0], len(seen), restarts, time.perf_counter() - started


def _finish(path: Path, shown: Path) -> Checked:
    """Make the copy one self-contained file (rollback journal, no -wal), synced; then check it."""
    try:
        with _connect(path) as conn:
            conn.execute("PRAGMA journal_mode = DELETE").fetchall()
            checked = _inspect(conn, path, shown)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot check the copy of {shown}: {exc}") from exc
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
    return checked


def restore(url: str, source: Path, *, known_revisions: Collection[str]) -> Restored:
    """Put the backup `source` in place of the database at `url` (see the module doc)."""
    database = _database_path(url)
    if database.exists() and source.resolve() == database.resolve():
        raise BackupError("the backup to restore is the database itself")
    found = check(source)
    if found.revision not in known_revisions:
        raise BackupError(
            f"{source} is at migration revision {found.revision!r}, which this version of SiteComms does not know"
            " (a backup from a newer version?)"
        )
    if not found.ok:
        raise BackupError(f"{source} fails its integrity check: {found.integrity}")
    if not database.parent.is_dir():
        raise BackupError(f"no directory {database.parent}")
    partial = private_temporary(database, "restoring")
    try:
        _copy(source, partial, STEP_PAGES, None, read_only=True)
        checked = _finish(partial, source)
        if not checked.ok or checked.revision != found.revision:
            raise BackupError(f"the copy of {source} failed its check ({checked.integrity})")
        replaced = _swap(database, partial)
    finally:
        partial.unlink(missing_ok=True)
    return Restored(database, replaced, checked)


def _swap(database: Path, replacement: Path) -> Path | None:
    """Move `replacement` to `database`, keeping the old file (made self-contained) beside it."""
    if not database.exists():
        for suffix in ("-wal", "-shm", "-journal"):  # another database's leftovers would be read as this one's
            if database.with_name(database.name + suffix).exists():
                raise BackupError(f"{database} is missing but {database}{suffix} is there: move it away first")
        os.replace(replacement, database)
        _sync_directory(database.parent)
        return None
    try:
        with _connect(database, timeout=0) as probe:
            mode = probe.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
    except sqlite3.OperationalError as exc:  # SQLITE_BUSY: another connection holds it
        raise BackupError(f"{database} is in use (stop every sitecomms server using it first): {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{database} is not an SQLite database ({exc}); move it away first") from exc
    if str(mode).lower() != "delete":
        raise BackupError(f"{database} is in use (stop every sitecomms server using it first)")
    for suffix in ("-wal", "-shm", "-journal"):
        if database.with_name(database.name + suffix).exists():
            raise BackupError(f"{database}{suffix} is still there: is a server using the database?")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = database.with_name(f"{database.name}.before-restore-{stamp}")
    os.link(database, kept)  # the old file keeps a name throughout
    os.replace(replacement, database)
    _sync_directory(database.parent)
    return kept
