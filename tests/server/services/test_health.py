"""Readiness (`services/health.py`): a database that reads but refuses writes is not ready.

The refusals are real, and made as root (`tests.support.write_refusal`): on PostgreSQL the
database is switched to `default_transaction_read_only` (what a failover to a standby or
maintenance looks like to the server: new connections refuse writes with 25006) and the
server's connections are ended so that it reconnects into it; on SQLite the database lives on
a small tmpfs that is filled up (SQLITE_FULL: a full disk), reads still answering, then emptied.
Probes are kept for a second: a fake clock shows it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from sitecomms.server.services.errors import Unavailable
from sitecomms.server.services.health import Health
from sitecomms.store import errors as store_errors
from sitecomms.store import migrate
from sitecomms.store.database import Database, SQLiteDatabase, open_database
from tests.servers import BACKENDS, refusable_database
from tests.sql import execute
from tests.support import write_refusal

TIMEOUT = 60.0
ATTEMPTS = 20  # probes until a change shows (a PostgreSQL connection ended is noticed on its next use)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def migrated(backend: str, tmp_path: Path) -> AsyncIterator[tuple[str, Database]]:
    async with refusable_database(backend, tmp_path) as url:
        await asyncio.wait_for(migrate.upgrade_async(url), TIMEOUT)
        db = open_database(url, pool_size=2)
        try:
            yield url, db
        finally:
            await asyncio.wait_for(db.close(), TIMEOUT)


async def _until(health: Health, wanted: str) -> str:
    """Probe (each call probes: `every=0`) until the answer or refusal starts with `wanted`."""
    answer = ""
    for _ in range(ATTEMPTS):
        try:
            answer = await health.ready()
        except Unavailable as exc:
            answer = exc.message
        if answer.startswith(wanted):
            return answer
    raise AssertionError(f"no answer {wanted!r} in {ATTEMPTS} probes; the last: {answer}")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_database_refusing_writes_is_not_ready_and_ready_again_once_they_work(
    backend: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TIMEOUT), migrated(backend, tmp_path) as (url, db):
        health = Health(db, every=0.0)
        refuse, allow = write_refusal(url)
        assert await health.ready() == backend
        await refuse()
        try:  # PostgreSQL: the ended connections may fail a probe or two first
            refusal = await _until(health, "database not ready: writes are refused")
            if backend == "sqlite":
                assert "database or disk is full" in refusal, refusal
            else:
                assert "read-only transaction" in refusal, refusal
            await db.ping()  # reads still answer: a read-only probe would have said "ready"
        finally:
            await allow()
        assert await _until(health, backend) == backend


async def test_a_refused_write_is_a_503_kind_of_failure_on_postgresql(tmp_path: Path) -> None:
    """25006 (read-only transaction) is the store's `Unavailable`: a send answers 503, not 500."""
    async with asyncio.timeout(TIMEOUT), migrated("postgresql", tmp_path) as (url, db):
        refuse, allow = write_refusal(url)
        await refuse()
        try:
            with pytest.raises(store_errors.Unavailable, match="read-only"):
                for _ in range(ATTEMPTS):  # the first use of an ended connection fails as a disconnect
                    try:
                        await db.write("test_write", lambda conn: execute(conn, text("UPDATE health_probe SET id = 1")))
                    except store_errors.Unavailable as exc:
                        if "read-only" in str(exc):
                            raise
        finally:
            await allow()


async def test_answers_are_kept_for_a_second_and_one_probe_runs_at_a_time(tmp_path: Path) -> None:
    async with asyncio.timeout(TIMEOUT), migrated("sqlite", tmp_path) as (_url, db):
        assert isinstance(db, SQLiteDatabase)
        clock = Clock()
        health = Health(db, every=1.0, clock=clock)
        answers = await asyncio.gather(*(health.ready() for _ in range(50)))
        assert answers == ["sqlite"] * 50
        assert db.writer_batches == 1  # fifty checks at once: one probe's write
        clock.now += 0.99
        await health.ready()
        assert db.writer_batches == 1  # within the second: the kept answer
        clock.now += 0.01
        await health.ready()
        assert db.writer_batches == 2


async def test_a_refused_send_makes_the_process_not_ready_until_a_probe_succeeds(tmp_path: Path) -> None:
    async with asyncio.timeout(TIMEOUT), migrated("sqlite", tmp_path) as (_url, db):
        clock = Clock()
        health = Health(db, every=1.0, clock=clock)
        assert await health.ready() == "sqlite"
        health.write_refused(store_errors.Unavailable(f"send_message: disk I/O error {uuid.uuid4().hex[:4]}"))
        with pytest.raises(Unavailable, match="database not ready: a write was refused: send_message"):
            await health.ready()
        clock.now += 1.0  # the next probe finds writes working
        assert await health.ready() == "sqlite"


async def test_a_write_that_does_not_commit_in_time_is_not_ready(tmp_path: Path) -> None:
    """The writer is held by a long transaction: the probe's write times out (reads still answer)."""
    async with asyncio.timeout(TIMEOUT), migrated("sqlite", tmp_path) as (_url, db):
        health = Health(db, every=0.0, timeout=0.2)
        release = asyncio.Event()
        loop = asyncio.get_running_loop()
        held = asyncio.Event()

        def hold(_conn: object) -> None:
            loop.call_soon_threadsafe(held.set)
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(TIMEOUT)

        holder = asyncio.create_task(db.write("test_hold", hold))
        await held.wait()
        try:
            with pytest.raises(Unavailable, match=r"no write committed within 0\.2 s"):
                await health.ready()
        finally:
            release.set()
            await holder
        assert await health.ready() == "sqlite"
