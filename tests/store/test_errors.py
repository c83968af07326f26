"""The store's own failures: the same `Duplicate(constraint)` and `Unavailable` on both engines.

Every case runs through `Database.write` (the SQLite writer thread or the PostgreSQL retry
loop), `Database.read` where it applies, and `blocking.run`, since all of them must hand their
failures to the one translation (`sitecomms/store/errors.py`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, select, text
from sqlalchemy.exc import IntegrityError

from sitecomms.store import blocking, migrate, schema
from sitecomms.store.database import Database, open_database
from sitecomms.store.errors import Duplicate, Unavailable
from sitecomms.store.types import utcnow
from tests.sql import execute
from tests.support import POSTGRES_ADMIN_URL

TIMEOUT = 30.0
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nothing_listens_here"
NO_SUCH_DATABASE = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/sitecomms_no_such_database"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await migrate.upgrade_async(database_url)
    database = open_database(database_url, pool_size=2)
    yield database
    await database.close()


def _org(conn: Connection, org_id: str) -> None:
    execute(conn, insert(schema.orgs).values(id=org_id, name="Errors", created_at=utcnow()))
    execute(conn, insert(schema.org_streams).values(org_id=org_id, position=0))


def _user(conn: Connection, org_id: str, email: str, position: int) -> str:
    user_id = str(uuid.uuid4())
    execute(
        conn,
        insert(schema.users).values(
            id=user_id,
            org_id=org_id,
            email=email,
            display_name="U",
            role="medic",
            password_hash="x",
            created_at=utcnow(),
            position=position,
        ),
    )
    return user_id


def _broadcast(conn: Connection, org_id: str, position: int) -> str:
    conversation_id = str(uuid.uuid4())
    execute(
        conn,
        insert(schema.conversations).values(
            id=conversation_id, org_id=org_id, type="broadcast", created_at=utcnow(), position=position
        ),
    )
    return conversation_id


def _message(conn: Connection, org_id: str, conversation_id: str, sender_id: str, key: str, position: int) -> None:
    execute(
        conn,
        insert(schema.messages).values(
            id=str(uuid.uuid4()),
            org_id=org_id,
            conversation_id=conversation_id,
            sender_id=sender_id,
            content="hello",
            idempotency_key=key,
            created_at=utcnow(),
            position=position,
        ),
    )


def _world(conn: Connection, org_id: str, email: str) -> tuple[str, str]:
    """An org with a user and its broadcast, the user having sent one message with key "k"."""
    _org(conn, org_id)
    user_id = _user(conn, org_id, email, position=1)
    conversation_id = _broadcast(conn, org_id, position=2)
    _message(conn, org_id, conversation_id, user_id, "k", position=3)
    return user_id, conversation_id


# Each case violates one unique constraint of a world made by `_world`, and names it.
Violation = Callable[[Connection, str, str, str, str], object]
VIOLATIONS: dict[str, tuple[Violation, str]] = {
    "email": (lambda conn, org, email, user, conv: _user(conn, org, email, position=10), schema.UNIQUE_EMAIL),
    "idempotency-key": (
        lambda conn, org, email, user, conv: _message(conn, org, conv, user, "k", position=10),
        schema.UNIQUE_IDEMPOTENCY_KEY,
    ),
    "org-position": (
        lambda conn, org, email, user, conv: _message(conn, org, conv, user, "other", position=3),
        "uq_messages_org_id_position",
    ),
    "primary-key": (lambda conn, org, email, user, conv: _org(conn, org), "pk_orgs"),
    "partial-unique-index": (
        lambda conn, org, email, user, conv: _broadcast(conn, org, position=10),
        "uq_conversations_broadcast_org",
    ),
}


@pytest.mark.parametrize("case", list(VIOLATIONS))
async def test_a_violated_unique_constraint_is_a_duplicate_naming_it(db: Database, case: str) -> None:
    violate, constraint = VIOLATIONS[case]
    org_id, email = str(uuid.uuid4()), f"{uuid.uuid4().hex}@errors.example"
    user_id, conversation_id = await db.write("world", _world, org_id, email)

    with pytest.raises(Duplicate) as raised:
        await asyncio.wait_for(db.write("violate", violate, org_id, email, user_id, conversation_id), TIMEOUT)
    assert raised.value.constraint == constraint
    assert not isinstance(raised.value, IntegrityError), "nothing of SQLAlchemy reaches the caller"
    rows = await db.read(
        "count",
        lambda conn: execute(conn, select(schema.messages.c.id).where(schema.messages.c.org_id == org_id)).all(),
    )
    assert len(rows) == 1, "the violating transaction was rolled back"


async def test_blocking_work_reports_the_same_duplicate(database_url: str) -> None:
    await migrate.upgrade_async(database_url)
    org_id, email = str(uuid.uuid4()), f"{uuid.uuid4().hex}@errors.example"
    await asyncio.to_thread(blocking.run, database_url, "world", _world, org_id, email)
    with pytest.raises(Duplicate) as raised:
        await asyncio.to_thread(blocking.run, database_url, "user", _user, org_id, email, 10)
    assert raised.value.constraint == schema.UNIQUE_EMAIL


def _orphan_message(conn: Connection) -> None:
    _message(conn, str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()), "k", position=1)


async def test_other_constraint_violations_are_not_duplicates(db: Database) -> None:
    """A foreign key violation is a bug of the caller: it comes back as it was raised."""
    with pytest.raises(IntegrityError) as raised:
        await asyncio.wait_for(db.write("orphan", _orphan_message), TIMEOUT)
    assert not isinstance(raised.value, Duplicate | Unavailable)


def _boom(conn: Connection) -> None:
    raise LookupError("the caller's own")


async def test_a_callers_own_exception_passes_unchanged(db: Database) -> None:
    with pytest.raises(LookupError, match="the caller's own"):
        await asyncio.wait_for(db.write("boom", _boom), TIMEOUT)
    with pytest.raises(LookupError, match="the caller's own"):
        await asyncio.wait_for(db.read("boom", _boom), TIMEOUT)


def _select_one(conn: Connection) -> int:
    return int(execute(conn, text("SELECT 1")).scalar_one())


async def _unavailable_every_way(url: str) -> None:
    """Reads, writes and the blocking runner all report `Unavailable` for the database at `url`."""
    db = open_database(url, pool_size=1)
    try:
        with pytest.raises(Unavailable):
            await asyncio.wait_for(db.read("read", _select_one), TIMEOUT)
        with pytest.raises(Unavailable):
            await asyncio.wait_for(db.write("write", _select_one), TIMEOUT)
    finally:
        await db.close()
    with pytest.raises(Unavailable):
        await asyncio.to_thread(blocking.run, url, "select_one", _select_one)


@pytest.mark.postgres
@pytest.mark.parametrize("url", [UNREACHABLE, NO_SUCH_DATABASE], ids=["unreachable", "no-such-database"])
async def test_a_postgresql_that_cannot_be_reached_is_unavailable(url: str) -> None:
    await _unavailable_every_way(url)


async def test_an_sqlite_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'sitecomms.db'}"
    await _unavailable_every_way(url)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Another connection holds the file's exclusive lock, as a process that never lets go does.

    In exclusive locking mode a connection keeps the lock it took until it closes, and under WAL
    it keeps readers out too (it works without the shared memory others would need)."""
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("UPDATE org_streams SET position = position")
        holder.execute("COMMIT")
        yield
    finally:
        holder.close()


async def test_a_locked_sqlite_is_unavailable_for_reads_and_writes(sqlite_url: str, tmp_path: Path) -> None:
    await migrate.upgrade_async(sqlite_url)
    with _locked(tmp_path / "sitecomms.db"):
        db = open_database(sqlite_url, pool_size=1)
        try:
            with pytest.raises(Unavailable, match=r"locked \(SQLITE_BUSY\)"):  # the extended code is named
                await asyncio.wait_for(db.write("write", _org, str(uuid.uuid4())), TIMEOUT)
            with pytest.raises(Unavailable, match="locked"):
                await asyncio.wait_for(db.read("read", _select_one), TIMEOUT)
        finally:
            await db.close()
    db = open_database(sqlite_url, pool_size=1)
    try:
        await asyncio.wait_for(db.write("write", _org, str(uuid.uuid4())), TIMEOUT)  # the lock gone, all works
        assert await asyncio.wait_for(db.read("read", _select_one), TIMEOUT) == 1
    finally:
        await db.close()


def _raising(sqlstate: str, calls: list[str]) -> Callable[[Connection], None]:
    def txn(conn: Connection) -> None:
        calls.append(sqlstate)
        execute(conn, text(f"DO $$ BEGIN RAISE EXCEPTION 'as asked' USING ERRCODE = '{sqlstate}'; END $$"))

    return txn


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("sqlstate", "attempts"),
    [("40001", 5), ("40P01", 5), ("55P03", 1), ("57014", 1)],
    ids=["serialization-failure", "deadlock", "lock-not-available", "query-cancelled"],
)
async def test_a_contended_postgresql_is_unavailable_once_retries_are_spent(sqlstate: str, attempts: int) -> None:
    """PostgreSQL itself raises each SQLSTATE (`RAISE ... USING ERRCODE`); writes retry the
    serialization failures and deadlocks first."""
    db = open_database(POSTGRES_ADMIN_URL, pool_size=1)
    try:
        calls: list[str] = []
        with pytest.raises(Unavailable, match="as asked"):
            await asyncio.wait_for(db.write("contended", _raising(sqlstate, calls)), TIMEOUT)
        assert len(calls) == attempts
        with pytest.raises(Unavailable, match="as asked"):
            await asyncio.wait_for(db.read("contended", _raising(sqlstate, [])), TIMEOUT)
    finally:
        await db.close()


def _write_org(conn: Connection) -> None:
    _org(conn, str(uuid.uuid4()))


async def test_an_sqlite_database_that_is_read_only_is_unavailable(tmp_path: Path) -> None:
    """SQLITE_READONLY (a file remounted read-only, or replaced under the server): a 503 to retry, not a 500."""
    path = tmp_path / "sitecomms.db"
    await asyncio.to_thread(migrate.upgrade, f"sqlite:///{path}")
    db = open_database(f"sqlite:///file:{path}?mode=ro&uri=true", pool_size=1)
    try:
        with pytest.raises(Unavailable, match="readonly"):
            await asyncio.wait_for(db.write("write", _write_org), TIMEOUT)
    finally:
        await db.close()
