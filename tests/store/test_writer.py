"""SQLite group commit: writes queued behind a commit share the next one, and each still succeeds
or fails on its own (see `sitecomms/store/writer.py`).

To queue writes deterministically, the first job holds the writer thread until the test lets
it go; the jobs submitted meanwhile form one batch.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Connection, create_engine

from sitecomms.store import migrate, orgs
from sitecomms.store.database import SQLiteDatabase, open_database
from sitecomms.store.errors import Duplicate, Unavailable
from sitecomms.store.stream import current_position, next_position
from sitecomms.store.types import utcnow
from sitecomms.store.writer import WriterThread

TIMEOUT = 30.0


@pytest.fixture
async def db(sqlite_url: str) -> AsyncIterator[SQLiteDatabase]:
    migrate.upgrade(sqlite_url)
    database = open_database(sqlite_url)
    assert isinstance(database, SQLiteDatabase)
    yield database
    await database.close()


async def _new_org(db: SQLiteDatabase) -> str:
    org_id = str(uuid.uuid4())
    await db.write("create_org", lambda conn: orgs.insert_org(conn, org_id=org_id, name="Org", now=utcnow()))
    return org_id


def _hold(entered: threading.Event, release: threading.Event) -> None:
    entered.set()
    if not release.wait(TIMEOUT):
        raise TimeoutError("the test never released the writer")


async def test_queued_writes_share_one_commit_and_all_persist(db: SQLiteDatabase, sqlite_url: str) -> None:
    org_id = await _new_org(db)
    entered, release = threading.Event(), threading.Event()
    holder = asyncio.ensure_future(db.write("hold", lambda conn: _hold(entered, release)))
    assert await asyncio.wait_for(asyncio.to_thread(entered.wait, TIMEOUT), TIMEOUT)
    batches_before = db.writer_batches
    takes = [asyncio.ensure_future(db.write("take", next_position, org_id)) for _ in range(50)]
    await asyncio.sleep(0)  # let every submission reach the writer's queue
    release.set()
    positions = await asyncio.wait_for(asyncio.gather(*takes), TIMEOUT)
    await asyncio.wait_for(holder, TIMEOUT)

    assert sorted(positions) == list(range(1, 51)), "each write ran once, in one serial order"
    assert positions == sorted(positions), "results come back in submission order"
    assert db.writer_batches - batches_before < 50, "queued writes were not grouped"
    await db.close()
    reopened = open_database(sqlite_url)
    try:
        assert await reopened.read("head", current_position, org_id) == 50  # durable after reopening
    finally:
        await reopened.close()


def _take_then_fail(conn: Connection, org_id: str) -> None:
    next_position(conn, org_id, 1000)
    raise ValueError("this job fails after writing")


def _duplicate_org(conn: Connection, org_id: str) -> None:
    orgs.insert_org(conn, org_id=org_id, name="Again", now=utcnow())


async def test_a_failing_write_in_a_batch_is_undone_alone(db: SQLiteDatabase) -> None:
    org_id = await _new_org(db)
    entered, release = threading.Event(), threading.Event()
    holder = asyncio.ensure_future(db.write("hold", lambda conn: _hold(entered, release)))
    assert await asyncio.wait_for(asyncio.to_thread(entered.wait, TIMEOUT), TIMEOUT)
    before = asyncio.ensure_future(db.write("take", next_position, org_id))
    failing = asyncio.ensure_future(db.write("take_then_fail", _take_then_fail, org_id))
    conflicting = asyncio.ensure_future(db.write("duplicate", _duplicate_org, org_id))
    after = asyncio.ensure_future(db.write("take", next_position, org_id))
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.wait_for(
        asyncio.gather(before, failing, conflicting, after, return_exceptions=True), TIMEOUT
    )
    await asyncio.wait_for(holder, TIMEOUT)

    assert results[0] == 1
    assert isinstance(results[1], ValueError)
    assert isinstance(results[2], Duplicate) and results[2].constraint == "pk_orgs", "the caller learns which"
    assert results[3] == 2, "the failed job's 1,000 positions were rolled back"
    assert await db.read("head", current_position, org_id) == 2


async def test_a_lone_failing_write_is_rolled_back(db: SQLiteDatabase) -> None:
    org_id = await _new_org(db)
    with pytest.raises(ValueError):
        await asyncio.wait_for(db.write("take_then_fail", _take_then_fail, org_id), TIMEOUT)
    assert await db.read("head", current_position, org_id) == 0


async def test_the_wal_is_checkpointed_off_the_writer(db: SQLiteDatabase, sqlite_url: str) -> None:
    """The writer never checkpoints (autocheckpoint off); the checkpointer thread does, after commits."""
    org_id = await _new_org(db)
    for _ in range(20):
        await asyncio.wait_for(db.write("take", next_position, org_id), TIMEOUT)
    done_before = db.checkpointer.checkpoints
    await asyncio.wait_for(db.write("take", next_position, org_id), TIMEOUT)
    assert await asyncio.to_thread(db.checkpointer.wait_for, done_before + 1, TIMEOUT)
    writer_setting = await db.write(
        "autocheckpoint", lambda conn: conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    )
    assert writer_setting == 0


class _Escape(BaseException):
    """Not an Exception: what no job should raise, and the writer must survive anyway."""


def _escape(conn: Connection) -> None:
    raise _Escape


async def test_the_writer_survives_a_job_that_escapes_every_handler(db: SQLiteDatabase) -> None:
    org_id = await _new_org(db)
    with pytest.raises(Unavailable):
        await asyncio.wait_for(db.write("escape", _escape), TIMEOUT)
    assert await asyncio.wait_for(db.write("take", next_position, org_id), TIMEOUT) == 1, "the next write works"


async def test_background_writes_yield_to_the_others_and_never_share_their_commit(db: SQLiteDatabase) -> None:
    entered, release = threading.Event(), threading.Event()
    ran: list[str] = []
    holder = asyncio.ensure_future(db.write("hold", lambda conn: _hold(entered, release)))
    assert await asyncio.wait_for(asyncio.to_thread(entered.wait, TIMEOUT), TIMEOUT)
    batches_before = db.writer_batches

    def job(conn: Connection, name: str) -> str:
        ran.append(name)
        return name

    behind = [asyncio.ensure_future(db.write_background(name, job, name)) for name in ("b1", "b2")]
    await asyncio.sleep(0)
    ahead = [asyncio.ensure_future(db.write(name, job, name)) for name in ("s1", "s2")]
    await asyncio.sleep(0)
    release.set()
    done = await asyncio.wait_for(asyncio.gather(*behind, *ahead), TIMEOUT)
    await asyncio.wait_for(holder, TIMEOUT)

    assert done == ["b1", "b2", "s1", "s2"]
    assert ran == ["s1", "s2", "b1", "b2"], "the sends queued later ran first"
    assert db.writer_batches - batches_before == 1 + 1 + 2, "the holder; the sends in one; each background job alone"


async def test_background_writes_queued_at_close_still_run(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    database = open_database(sqlite_url)
    org_id = str(uuid.uuid4())
    write = asyncio.ensure_future(
        database.write_background("org", lambda conn: orgs.insert_org(conn, org_id=org_id, name="Org", now=utcnow()))
    )
    await asyncio.sleep(0)
    await asyncio.wait_for(database.close(), TIMEOUT)
    await asyncio.wait_for(write, TIMEOUT)
    again = open_database(sqlite_url)
    try:
        assert await again.read("org", orgs.get_org, org_id) is not None
    finally:
        await again.close()


async def test_a_background_write_that_waited_long_enough_runs_before_the_sends(sqlite_url: str) -> None:
    """A steady stream of sends cannot starve background work: once a background job has waited
    `background_max_wait` (0 here), it goes next."""
    writer = WriterThread(create_engine(sqlite_url), background_max_wait=0.0)
    entered, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def job(conn: Connection, name: str) -> str:
        ran.append(name)
        return name

    try:
        holder = writer.submit("hold", lambda conn: _hold(entered, release), (), {})
        assert await asyncio.wait_for(asyncio.to_thread(entered.wait, TIMEOUT), TIMEOUT)
        behind = writer.submit("b1", job, ("b1",), {}, background=True)
        ahead = writer.submit("s1", job, ("s1",), {})
        release.set()
        assert await asyncio.wait_for(asyncio.gather(holder, behind, ahead), TIMEOUT) == [None, "b1", "s1"]
        assert ran == ["b1", "s1"]
    finally:
        await asyncio.to_thread(writer.stop)
