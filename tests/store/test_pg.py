"""How the server's PostgreSQL runs a function: in a transaction, or, when declared, without one.

`one_read` and `one_change` leave out BEGIN and COMMIT (store/pg.py); the connection holds a
function to its declaration, and a function without one is a transaction as always.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text

from sitecomms.store import migrate, orgs, stream
from sitecomms.store.database import Connection, Database, PostgresDatabase, one_change, one_read, open_database
from sitecomms.store.errors import Duplicate, Unavailable, translate
from sitecomms.store.pg import PgConnection, connection_lost, driver_error
from sitecomms.store.types import utcnow
from tests.sql import execute
from tests.support import POSTGRES_ADMIN_URL, create_postgres_database, drop_postgres_database

pytestmark = pytest.mark.postgres

TIMEOUT = 30.0


@pytest.fixture
async def db(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    name = f"sitecomms_test_{uuid.uuid4().hex[:10]}"
    url = await create_postgres_database(name)
    await migrate.upgrade_async(url)
    database = open_database(url, pool_size=2)
    assert isinstance(database, PostgresDatabase)
    request.node.stash[_NAME] = name
    try:
        yield database
    finally:
        await database.close()
        await drop_postgres_database(name)


_NAME = pytest.StashKey[str]()


def _in_transaction(conn: Connection) -> bool:
    assert isinstance(conn, PgConnection)
    return bool(conn.raw.is_in_transaction())


@one_read
def _head(conn: Connection, org_id: str) -> tuple[int, bool]:
    return stream.current_position(conn, org_id), _in_transaction(conn)


@one_read
def _two_reads(conn: Connection, org_id: str) -> int:
    return stream.current_position(conn, org_id) + stream.current_position(conn, org_id)


@one_read
def _a_change_in_a_read(conn: Connection, org_id: str) -> int:
    return stream.next_position(conn, org_id, 1)


@one_change
def _take(conn: Connection, org_id: str, count: int) -> tuple[int, int, bool]:
    before = stream.current_position(conn, org_id)
    first = stream.next_position(conn, org_id, count)
    return before, first, _in_transaction(conn)


@one_change
def _take_twice(conn: Connection, org_id: str) -> int:
    stream.next_position(conn, org_id, 1)
    return stream.next_position(conn, org_id, 1)


@one_change
def _org_again(conn: Connection, org_id: str) -> None:
    orgs.insert_org(conn, org_id=org_id, name=f"Org {org_id}", now=utcnow())  # its first statement fails


def _plain_read(conn: Connection, org_id: str) -> tuple[int, bool]:
    return stream.current_position(conn, org_id), _in_transaction(conn)


async def _org(db: Database) -> str:
    org_id = str(uuid.uuid4())
    await db.write("test_org", lambda conn: orgs.insert_org(conn, org_id=org_id, name=f"Org {org_id}", now=utcnow()))
    return org_id


async def test_a_declared_read_runs_its_one_statement_without_begin(db: Database) -> None:
    org_id = await _org(db)
    assert await asyncio.wait_for(db.read("head", _head, org_id), TIMEOUT) == (0, False)
    assert await asyncio.wait_for(db.read("plain", _plain_read, org_id), TIMEOUT) == (0, True)


async def test_a_declared_read_is_refused_a_second_statement_and_any_change(db: Database) -> None:
    org_id = await _org(db)
    with pytest.raises(AssertionError, match="one_read"):
        await asyncio.wait_for(db.read("two", _two_reads, org_id), TIMEOUT)
    with pytest.raises(AssertionError, match="one_read"):
        await asyncio.wait_for(db.read("change", _a_change_in_a_read, org_id), TIMEOUT)
    assert await db.read("head", _head, org_id) == (0, False), "the refused change never ran"


async def test_a_declared_change_commits_alone_and_reads_what_is_committed(db: Database) -> None:
    org_id = await _org(db)
    assert await asyncio.wait_for(db.write("take", _take, org_id, 2), TIMEOUT) == (0, 1, False)
    assert await db.read("head", _head, org_id) == (2, False)


async def test_a_second_change_is_refused_after_the_first_has_committed(db: Database) -> None:
    org_id = await _org(db)
    with pytest.raises(AssertionError, match="one_change"):
        await asyncio.wait_for(db.write("twice", _take_twice, org_id), TIMEOUT)
    assert await db.read("head", _head, org_id) == (1, False), "the first change stands: a bug shows as one"


async def test_a_declared_change_that_fails_leaves_nothing(db: Database) -> None:
    org_id = await _org(db)
    with pytest.raises(Duplicate):
        await asyncio.wait_for(db.write("again", _org_again, org_id), TIMEOUT)
    rows = await db.read("count", lambda conn: execute(conn, text("SELECT count(*) FROM orgs")).scalar_one())
    assert rows == 1


async def test_the_connection_goes_back_to_the_pool_outside_any_transaction(db: Database) -> None:
    """A function that fails half way leaves no transaction open for the next one on that connection."""
    org_id = await _org(db)
    with pytest.raises(AssertionError):
        await db.write("twice", _take_twice, org_id)
    for _ in range(4):  # the pool holds at most 4: every one of them is reused
        assert await db.read("head", _head, org_id) == (1, False)


def _slow_change(conn: Connection, org_id: str, started: asyncio.Event) -> int:
    first = stream.next_position(conn, org_id, 1)
    started.set()
    execute(conn, text("SELECT pg_sleep(10)"))
    return first


async def test_a_write_cancelled_half_way_is_rolled_back_and_its_connection_is_clean(db: Database) -> None:
    """A client that goes away mid-request cancels its transaction: nothing of it stays, and the
    connection it held serves the next functions outside any transaction."""
    org_id = await _org(db)
    started = asyncio.Event()
    write = asyncio.create_task(db.write("slow", _slow_change, org_id, started))
    await asyncio.wait_for(started.wait(), TIMEOUT)
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(write, TIMEOUT)
    for _ in range(4):  # every connection of the pool, the cancelled one among them
        assert await asyncio.wait_for(db.read("head", _head, org_id), TIMEOUT) == (0, False)
        assert await asyncio.wait_for(db.read("plain", _plain_read, org_id), TIMEOUT) == (0, True)


def _end_every_session_holding_the_loop(database: str) -> None:
    """End every server session on `database`, and wait until they have exited, without letting
    this test's event loop run: the pool's connections have the server's FATAL and its close
    waiting unread, as a pool does after a restart or a failover while it sat idle."""

    async def end() -> None:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = $1", database
            )
        finally:
            await admin.close()

    ending = threading.Thread(target=lambda: asyncio.run(end()))
    ending.start()
    ending.join(TIMEOUT)
    assert not ending.is_alive()


def _plain_take(conn: Connection, org_id: str) -> int:
    return stream.next_position(conn, org_id, 1)


@pytest.mark.parametrize("kind", ["declared read", "read", "declared change", "write"])
async def test_a_connection_the_server_ended_while_pooled_is_replaced_and_the_function_runs(
    db: Database, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    org_id = await _org(db)
    calls = {
        "declared read": lambda: db.read("head", _head, org_id),
        "read": lambda: db.read("plain", _plain_read, org_id),
        "declared change": lambda: db.write("take", _take, org_id, 1),
        "write": lambda: db.write("plain take", _plain_take, org_id),
    }
    await asyncio.wait_for(calls[kind](), TIMEOUT)  # the pool now holds a connection
    _end_every_session_holding_the_loop(request.node.stash[_NAME])
    with caplog.at_level(logging.INFO, logger="sitecomms.store.txn"):
        await asyncio.wait_for(calls[kind](), TIMEOUT)
    assert any("after a lost one" in r.getMessage() for r in caplog.records), "the lost connection was met"
    expected = 2 if "change" in kind or kind == "write" else 0
    assert await db.read("head", _head, org_id) == (expected, False), "each change once"


@one_change
def _take_then_lose_the_connection(conn: Connection, org_id: str) -> int:
    first = stream.next_position(conn, org_id, 1)
    execute(conn, text("SELECT pg_terminate_backend(pg_backend_pid())"))
    return first


async def test_a_connection_lost_after_a_declared_change_is_unavailable_and_not_run_again(db: Database) -> None:
    """The change committed on its own before the connection went: running the function again
    would make it twice, so the caller hears Unavailable and retries with its own key."""
    org_id = await _org(db)
    with pytest.raises(Unavailable):
        await asyncio.wait_for(db.write("take, lost", _take_then_lose_the_connection, org_id), TIMEOUT)
    assert await db.read("head", _head, org_id) == (1, False)


async def test_a_connection_lost_inside_a_transaction_runs_the_function_again_on_another(db: Database) -> None:
    org_id = await _org(db)
    attempts: list[int] = []

    def take_losing_the_first_connection(conn: Connection) -> int:
        attempts.append(1)
        first = stream.next_position(conn, org_id, 1)
        if len(attempts) == 1:
            execute(conn, text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return first

    assert await asyncio.wait_for(db.write("take, lost once", take_losing_the_first_connection), TIMEOUT) == 1
    assert len(attempts) == 2
    assert await db.read("head", _head, org_id) == (1, False), "the first attempt was rolled back with its session"


def test_a_protocol_out_of_step_is_a_lost_connection_and_unavailable() -> None:
    """What asyncpg raises on a pooled connection whose server's FATAL arrived while it was idle."""
    error = driver_error(
        asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is in progress"), "SELECT 1"
    )
    assert connection_lost(error)
    assert isinstance(translate(error, "send"), Unavailable)
    assert not connection_lost(driver_error(asyncpg.UniqueViolationError("duplicate"), "INSERT"))
