"""The audit log service: admins of the org only, the operator's reads, retention, and the
database's refusal to change an event (both engines)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text

from sitecomms.protocol.enums import AuditKind, Role
from sitecomms.server.services.audit_log import AuditLog
from sitecomms.server.services.errors import Forbidden
from sitecomms.server.services.visibility import Viewer
from sitecomms.store import audit
from sitecomms.store.database import Connection
from sitecomms.store.errors import Unavailable
from sitecomms.store.types import utcnow
from tests.conftest import Stack
from tests.sql import execute
from tests.support import Orgs

TIMEOUT = 10.0


async def test_medics_may_not_read_it_and_admins_read_only_their_org(stack: Stack, orgs: Orgs) -> None:
    mine = await orgs.make(admins=1, medics=1)
    theirs = await orgs.make(admins=1, medics=1)
    log = AuditLog(stack.db)
    with pytest.raises(Forbidden):
        await log.page(mine.medics[0].viewer)
    page = await log.page(mine.admins[0].viewer, limit=200)
    assert {e.subject_id for e in page.events} == {m.id for m in mine.members}
    assert (await log.page(mine.admins[0].viewer, user_id=theirs.medics[0].id)).events == []
    pretend = Viewer(mine.admins[0].id, theirs.org_id, Role.ADMIN)  # the viewer's org decides, nothing else
    assert {e.subject_id for e in (await log.page(pretend, limit=200)).events} == {m.id for m in theirs.members}


async def test_the_operator_reads_one_org_or_every_org(stack: Stack, orgs: Orgs) -> None:
    first = await orgs.make(admins=1, medics=0)
    second = await orgs.make(admins=1, medics=0)
    log = AuditLog(stack.db)
    one = await log.operator_page(first.org_id, kind=AuditKind.USER_CREATED)
    assert [e.subject_id for e in one.events] == [first.admins[0].id]
    every = await log.operator_page(None, kind=AuditKind.USER_CREATED, limit=200)
    subjects = [e.subject_id for e in every.events]
    assert subjects.index(second.admins[0].id) < subjects.index(first.admins[0].id)  # newest first


async def test_detail_is_parsed_and_limits_are_bounded(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=0)
    log = AuditLog(stack.db)
    page = await log.page(world.admins[0].viewer, kind=AuditKind.USER_CREATED, limit=0)
    assert len(page.events) == 1 and not page.has_more and page.next_before is None
    assert page.events[0].detail == {"email": world.admins[0].email, "display_name": world.admins[0].display_name,
                                     "role": "admin"}  # fmt: skip


def _tamper(conn: Connection, event_id: int) -> None:
    execute(conn, text("UPDATE audit_events SET kind = 'tampered' WHERE id = :id"), {"id": event_id})


async def test_the_database_refuses_to_update_an_event(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=0)
    log = AuditLog(stack.db)
    event = (await log.page(world.admins[0].viewer)).events[0]
    with pytest.raises(Exception, match="append-only"):
        await stack.db.write("tamper", _tamper, event.id)
    again = (await log.page(world.admins[0].viewer)).events[0]
    assert (again.id, again.kind) == (event.id, event.kind)


def _record_at(conn: Connection, org_id: str, ages_days: list[int]) -> None:
    now = utcnow()
    for days in ages_days:
        audit.record(
            conn, at=now - timedelta(days=days), org_id=org_id, kind=AuditKind.SIGN_IN, detail=f'{{"age": {days}}}'
        )


async def test_retention_deletes_only_events_older_than_it_and_expires_the_access_log(stack: Stack) -> None:
    org_id = str(uuid.uuid4())
    await stack.db.write("seed_audit", _record_at, org_id, [400, 366, 364, 0])
    expired_also: list[bool] = []

    async def access_log_expiry() -> int:
        expired_also.append(True)
        return 0

    log = AuditLog(stack.db, expire_also=access_log_expiry)
    assert await log.expire(365) >= 2
    left = await log.operator_page(org_id)
    assert [e.detail["age"] for e in left.events] == [0, 364]
    assert expired_also == [True]


async def _retention_failing_once(stack: Stack, caplog: pytest.LogCaptureFixture, failure: Exception) -> int:
    """Run the retention task, its first pass failing with `failure`, until it has run again;
    how many passes ran (the log is in `caplog`, from WARNING up)."""
    calls = 0
    ran_again = asyncio.Event()

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise failure
        ran_again.set()
        return 0

    log = AuditLog(stack.db, expire_also=flaky)
    with caplog.at_level(logging.WARNING, logger="sitecomms.audit"):
        log.start(365, every_seconds=0.01)
        try:
            await asyncio.wait_for(ran_again.wait(), TIMEOUT)
        finally:
            await asyncio.wait_for(log.close(), TIMEOUT)
    return calls


async def test_the_retention_task_survives_a_failure_and_runs_again(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    calls = await _retention_failing_once(stack, caplog, RuntimeError("the access log is unreachable"))
    assert calls >= 2
    assert "audit retention failed" in caplog.text


async def test_a_busy_database_postpones_retention_with_one_warning_and_no_traceback(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    await _retention_failing_once(stack, caplog, Unavailable("access_expire: database is locked"))
    postponed = [r for r in caplog.records if "postponed" in r.getMessage()]
    assert len(postponed) == 1 and postponed[0].levelno == logging.WARNING, caplog.text
    assert postponed[0].exc_info is None and "database is locked" in postponed[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
