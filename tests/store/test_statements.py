"""Every statement of the store gives the same rows through its executor as through `conn.execute`.

`Statement` runs SQL on the raw `sqlite3` connection, and in the server on the raw asyncpg one,
with processors it took from SQLAlchemy once (store/statements.py); here every registered
statement runs both ways, on SQLite and on PostgreSQL (there the plain way on SQLAlchemy's own
asyncpg connection, in a transaction of its own), against a seeded organisation, and the rows
must be equal value for value and type for type (times timezone-aware UTC both ways). Writes
run each way in a savepoint that is rolled back, so both see the same state. A statement
without a case here fails the test, so a new statement cannot skip it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import CompoundSelect, DateTime, Select, delete, insert
from sqlalchemy import Connection as SAConnection
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError

from sitecomms.protocol.enums import Role
from sitecomms.store import (
    access_changes,
    audit,
    blocking,
    conversations,
    health,
    messages,
    orgs,
    push,
    reads,
    schema,
    sessions,
    stream,
    throttle,
    users,
)
from sitecomms.store.database import Connection
from sitecomms.store.statements import REGISTRY, Statement
from sitecomms.store.types import UTCDateTime
from tests.conftest import Stack
from tests.sql import execute, savepoint

T = TypeVar("T")

QUERY_MODULES = (
    access_changes,
    audit,
    conversations,
    health,
    messages,
    orgs,
    push,
    reads,
    sessions,
    stream,
    throttle,
    users,
)  # importing them registers every statement
TIMEOUT_SECONDS = 60
NOW = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


@dataclass(frozen=True)
class Seed:
    """An org with an admin, two medics, messages everywhere, and some read marks."""

    org_id: str
    org_name: str
    admin_id: str
    medic_id: str
    medic_email: str
    neighbour_id: str
    direct_id: str
    broadcast_id: str
    message_id: str
    message_key: str
    head: int


Params = dict[str, Any]
Prepare = Callable[[Connection], None]


@dataclass(frozen=True)
class Case:
    """Parameter sets to run a statement with; `prepare` runs first, inside the same savepoint."""

    params: list[Params]
    prepare: Prepare | None = None
    rows_expected: bool = True  # at least one parameter set returns rows (or changes one)
    sequenced: bool = False  # returns a new sequence value: PostgreSQL's does not roll back, so types only


def _fresh_org(org_id: str, user_id: str) -> Prepare:
    def prepare(conn: Connection) -> None:
        orgs.insert_org(conn, org_id=org_id, name="fresh", now=NOW)
        users.insert_user(
            conn,
            user_id=user_id,
            org_id=org_id,
            email=f"{user_id}@fresh.test",
            display_name="Fresh Medic",
            role=Role.MEDIC.value,
            password_hash="x",
            now=NOW,
            position=1,
        )

    return prepare


SESSION_ID = "00000000-0000-4000-8000-0000000000aa"


def _session_row(user_id: str, org_id: str) -> dict[str, Any]:
    return {
        "id": SESSION_ID,
        "org_id": org_id,
        "user_id": user_id,
        "device": "parity phone",
        "refresh_hash": "0" * 64,
        "generation": 3,
        "created_at": NOW,
        "last_used_at": NOW,
        "rotated_at": NOW,
        "last_address": "127.0.0.1",
        "revoked_at": None,
        "revoked_reason": None,
    }


def _session(user_id: str, org_id: str) -> Prepare:
    def prepare(conn: Connection) -> None:
        REGISTRY["sessions.insert"].run(conn, **_session_row(user_id, org_id))

    return prepare


def _audit_event(org_id: str, subject_id: str) -> dict[str, Any]:
    return {
        "at": NOW,
        "org_id": org_id,
        "kind": "sign_in",
        "actor_id": subject_id,
        "subject_id": subject_id,
        "session_id": SESSION_ID,
        "address": "127.0.0.1",
        "detail": '{"device": "parity"}',
    }


def _audit(org_id: str, subject_id: str) -> Prepare:
    def prepare(conn: Connection) -> None:
        # Explicit ids: a PostgreSQL sequence does not roll back with the savepoint.
        execute(conn, insert(schema.audit_events).values(id=10**9, **_audit_event(org_id, subject_id)))
        signed_out = {**_audit_event(org_id, subject_id), "kind": "signed_out"}
        execute(conn, insert(schema.audit_events).values(id=10**9 + 1, **signed_out))

    return prepare


def _access_change(user_id: str) -> Prepare:
    def prepare(conn: Connection) -> None:
        execute(conn, insert(schema.access_changes).values(id=10**9, at=NOW, user_id=user_id, session_id=None))

    return prepare


def _no_probe_row(conn: Connection) -> None:
    execute(conn, delete(schema.health_probe))


def _org_row(org_id: str) -> Prepare:
    def prepare(conn: Connection) -> None:
        REGISTRY["orgs.insert"].run(conn, org_id=org_id, name="fresh", created_at=NOW)

    return prepare


THROTTLE_KEY = "account:parity@throttle.example"


def _throttle_row(conn: Connection) -> None:
    throttle.record_failure(conn, THROTTLE_KEY, now=NOW, quiet_since=NOW - timedelta(minutes=15), block_for=lambda _: 2)


def _throttle_cases() -> dict[str, Case]:
    failure = [
        {"throttle_key": THROTTLE_KEY, "now": NOW + timedelta(seconds=1), "quiet_since": NOW - timedelta(minutes=15)},
        {"throttle_key": THROTTLE_KEY, "now": NOW + timedelta(hours=1), "quiet_since": NOW + timedelta(minutes=45)},
        {"throttle_key": "address:parity", "now": NOW, "quiet_since": NOW - timedelta(minutes=15)},
    ]
    return {
        "login_throttle.of_keys": Case(
            [{"keys": [THROTTLE_KEY]}, {"keys": [THROTTLE_KEY, "address:none", "account:none"]}], prepare=_throttle_row
        ),
        "login_throttle.failure.sqlite": Case(failure, prepare=_throttle_row),
        "login_throttle.failure.postgresql": Case(failure, prepare=_throttle_row),
        "login_throttle.block": Case(
            [{"throttle_key": THROTTLE_KEY, "until": NOW + timedelta(seconds=4)}], prepare=_throttle_row
        ),
        "login_throttle.reset": Case([{"throttle_key": THROTTLE_KEY}, {"throttle_key": "none"}], prepare=_throttle_row),
        "login_throttle.delete_quiet": Case([{"before": NOW + timedelta(minutes=1)}], prepare=_throttle_row),
    }


SUBSCRIPTION_ID = "00000000-0000-4000-8000-0000000000bb"
ENDPOINT = "https://push.example/send/parity"
DELIVERY_ID = 10**9


def _subscription_row(user_id: str, org_id: str) -> dict[str, Any]:
    return {
        "id": SUBSCRIPTION_ID,
        "org_id": org_id,
        "user_id": user_id,
        "session_id": SESSION_ID,
        "endpoint": ENDPOINT,
        "p256dh": "B" * 87,
        "auth": "A" * 22,
        "created_at": NOW,
    }


def _push(s: Seed, *, cursor: int | None = None, delivery: bool = False) -> Prepare:
    """A session of the medic with a push subscription; the org's push cursor at `cursor`; a due delivery."""

    def prepare(conn: Connection) -> None:
        REGISTRY["sessions.insert"].run(conn, **_session_row(s.medic_id, s.org_id))
        REGISTRY["push.subscription.insert"].run(conn, **_subscription_row(s.medic_id, s.org_id))
        if cursor is not None:
            execute(conn, insert(schema.push_cursors).values(org_id=s.org_id, position=cursor))
        if delivery:
            execute(
                conn,
                insert(schema.push_deliveries).values(
                    id=DELIVERY_ID,
                    subscription_id=SUBSCRIPTION_ID,
                    message_id=s.message_id,
                    due_at=NOW,
                    expires_at=NOW + timedelta(days=1),
                    leased_until=push.NEVER,
                    attempts=0,
                    with_content=True,
                ),
            )

    return prepare


def _push_cases(s: Seed) -> dict[str, Case]:
    sub = _push(s)
    planned = _push(s, cursor=1)
    due = _push(s, cursor=s.head, delivery=True)
    delivery = {
        "subscription_id": SUBSCRIPTION_ID,
        "message_id": s.message_id,
        "due_at": NOW,
        "expires_at": NOW + timedelta(hours=1),
        "leased_until": push.NEVER,
    }
    return {
        "push.subscription.insert": Case(
            [_subscription_row(s.medic_id, s.org_id)], prepare=_session(s.medic_id, s.org_id)
        ),
        "push.subscription.by_endpoint": Case([{"endpoint": ENDPOINT}, {"endpoint": "https://no.where/"}], prepare=sub),
        "push.subscription.rebind": Case(
            [
                {
                    "subscription_id": SUBSCRIPTION_ID,
                    "org_id": s.org_id,
                    "user_id": s.medic_id,
                    "session_id": SESSION_ID,
                    "p256dh": "C" * 87,
                    "auth": "D" * 22,
                }
            ],
            prepare=sub,
        ),
        "push.subscription.of_user": Case([{"user_id": s.medic_id}, {"user_id": s.admin_id}], prepare=sub),
        "push.subscription.delete_mine": Case(
            [
                {"subscription_id": SUBSCRIPTION_ID, "user_id": s.admin_id},
                {"subscription_id": SUBSCRIPTION_ID, "user_id": s.medic_id},
            ],
            prepare=sub,
        ),
        "push.subscription.delete_of_session": Case([{"session_id": SESSION_ID}], prepare=sub),
        "push.subscription.delete_of_user": Case(
            [{"user_id": s.medic_id, "keep": SESSION_ID}, {"user_id": s.medic_id, "keep": ""}], prepare=sub
        ),
        "push.subscription.delete_ids": Case([{"ids": [SUBSCRIPTION_ID, "none"]}], prepare=sub),
        "push.cursor.start.sqlite": Case([{"org_id": s.org_id, "position": 3}, {"org_id": s.org_id, "position": 4}]),
        "push.cursor.start.postgresql": Case(
            [{"org_id": s.org_id, "position": 3}, {"org_id": s.org_id, "position": 4}]
        ),
        "push.cursor.behind": Case([{"limit": 10}], prepare=planned),
        "push.cursor.move": Case(
            [{"org": s.org_id, "position": s.head, "after_subscription": SUBSCRIPTION_ID}], prepare=planned
        ),
        "push.targets.org": Case(
            [
                {"org_id": s.org_id, "after": "", "limit": 10, "active_since": NOW - timedelta(days=1)},
                {"org_id": s.org_id, "after": SUBSCRIPTION_ID, "limit": 10, "active_since": NOW - timedelta(days=1)},
                {"org_id": s.org_id, "after": "", "limit": 10, "active_since": NOW + timedelta(days=1)},
            ],
            prepare=sub,
        ),
        "push.targets.direct": Case(
            [
                {"org_id": s.org_id, "medic_id": s.medic_id, "active_since": NOW - timedelta(days=1)},
                {"org_id": s.org_id, "medic_id": s.neighbour_id, "active_since": NOW - timedelta(days=1)},
            ],
            prepare=sub,
        ),
        "push.delivery.insert": Case([delivery], prepare=sub),
        "push.delivery.claim": Case(
            [{"now": NOW, "until": NOW + timedelta(minutes=1), "limit": 10}, {"now": NOW, "until": NOW, "limit": 10}],
            prepare=due,
        ),
        "push.delivery.due": Case([{"ids": [DELIVERY_ID]}, {"ids": [DELIVERY_ID, 1, 2]}], prepare=due),
        "push.delivery.delete_ids": Case([{"ids": [DELIVERY_ID]}], prepare=due),
        "push.delivery.retry": Case(
            [{"delivery_id": DELIVERY_ID, "due_at": NOW + timedelta(seconds=30), "with_content": False}], prepare=due
        ),
        "push.pending_work": Case([{}], prepare=_push(s, cursor=1, delivery=True)),  # behind, and one due
        "push.delivery.pending": Case([{}], prepare=due),
    }


def _cases(s: Seed) -> dict[str, Case]:
    org, medic = {"org_id": s.org_id, "medic_id": None}, {"org_id": s.org_id, "medic_id": s.medic_id}
    changed = [p | {"after": 0, "limit": 1000} for p in (org, medic)] + [org | {"after": s.head - 3, "limit": 2}]
    ids = [s.broadcast_id, s.direct_id, "no-such-conversation"]
    fresh_org, fresh_user = str(uuid.uuid4()), str(uuid.uuid4())
    send = {
        "message_id": str(uuid.uuid4()),
        "org": s.org_id,
        "conversation": s.direct_id,
        "sender": s.admin_id,
        "sender_name": "Alex Admin",
        "sender_role": Role.ADMIN.value,
        "medic_name": "Dana Medic",
        "text": "parity",
        "key": str(uuid.uuid4()),
        "now": NOW,
        "preview": "parity",
    }
    return (
        {
            "stream.take": Case([{"org": s.org_id, "count": 2}]),
            "health.touch": Case([{"at": NOW}]),  # the migration's row
            "health.insert": Case([{"at": NOW}], prepare=_no_probe_row),
            "stream.head": Case([{"org_id": s.org_id}]),
            "stream.heads": Case([{"org_ids": [s.org_id]}, {"org_ids": [s.org_id, "none"]}]),
            "orgs.insert": Case([{"org_id": fresh_org, "name": "parity org", "created_at": NOW}]),
            "orgs.insert_stream": Case([{"org_id": fresh_org}], prepare=_org_row(fresh_org)),
            "orgs.by_id": Case([{"org_id": s.org_id}]),
            "orgs.by_name": Case([{"name": s.org_name}]),
            "users.insert": Case(
                [
                    {
                        "id": fresh_user,
                        "org_id": s.org_id,
                        "email": f"{fresh_user}@parity.test",
                        "display_name": "Parity",
                        "role": Role.MEDIC.value,
                        "password_hash": "x",
                        "created_at": NOW,
                        "position": s.head + 1,
                        "active": True,
                        "deactivated_at": None,
                    }
                ]
            ),
            "users.set_active": Case(
                [
                    {"user_id": s.medic_id, "active": False, "deactivated_at": NOW, "position": s.head + 1},
                    {"user_id": s.medic_id, "active": True, "deactivated_at": None, "position": s.head + 2},
                ]
            ),
            "users.set_role": Case([{"user_id": s.medic_id, "role": Role.ADMIN.value, "position": s.head + 1}]),
            "users.set_password": Case([{"user_id": s.medic_id, "password_hash": "new hash"}]),
            "users.active_admins": Case([{"org_id": s.org_id}, {"org_id": "no-such-org"}]),
            "sessions.insert": Case([_session_row(s.medic_id, s.org_id)]),
            "sessions.by_id": Case([{"session_id": SESSION_ID}], prepare=_session(s.medic_id, s.org_id)),
            "sessions.lock": Case([{"session_id": SESSION_ID}], prepare=_session(s.medic_id, s.org_id)),
            "sessions.of_user": Case([{"user_id": s.medic_id}], prepare=_session(s.medic_id, s.org_id)),
            "sessions.access": Case(
                [{"session_id": SESSION_ID}, {"session_id": "no-such-session"}], prepare=_session(s.medic_id, s.org_id)
            ),
            "sessions.rotate": Case(
                [
                    {"session_id": SESSION_ID, "generation": 3, "refresh_hash": "1" * 64, "now": NOW, "address": "::1"},
                    {"session_id": SESSION_ID, "generation": 2, "refresh_hash": "1" * 64, "now": NOW, "address": "::1"},
                ],
                prepare=_session(s.medic_id, s.org_id),
            ),
            "sessions.touch": Case(
                [{"session_id": SESSION_ID, "now": NOW, "address": "10.0.0.1"}], prepare=_session(s.medic_id, s.org_id)
            ),
            "sessions.revoke": Case(
                [{"session_id": SESSION_ID, "now": NOW, "reason": "revoked"}], prepare=_session(s.medic_id, s.org_id)
            ),
            "sessions.revoke_user": Case(
                [
                    {"owner": s.medic_id, "keep": "", "now": NOW, "reason": "deactivated"},
                    {"owner": s.medic_id, "keep": SESSION_ID, "now": NOW, "reason": "password_changed"},
                ],
                prepare=_session(s.medic_id, s.org_id),
                rows_expected=True,
            ),
            "audit.insert": Case([_audit_event(s.org_id, s.medic_id)], sequenced=True),
            "audit.page": Case(
                [
                    {"org_id": s.org_id, "before": 2**62, "limit": 10, "subject_id": None, "kind": None},
                    {"org_id": s.org_id, "before": 2**62, "limit": 1, "subject_id": s.medic_id, "kind": "signed_out"},
                    {"org_id": s.org_id, "before": 2**62, "limit": 10, "subject_id": s.admin_id, "kind": None},
                ],
                prepare=_audit(s.org_id, s.medic_id),
            ),
            "audit.every_org_page": Case(
                [{"before": 2**62, "limit": 5, "subject_id": s.medic_id, "kind": None}],
                prepare=_audit(s.org_id, s.medic_id),
            ),
            "audit.expire": Case([{"cutoff": NOW + timedelta(seconds=1)}], prepare=_audit(s.org_id, s.medic_id)),
            "access_changes.insert": Case(
                [{"at": NOW, "user_id": s.medic_id, "session_id": SESSION_ID}], sequenced=True
            ),
            "access_changes.after": Case([{"after": 10**9 - 1, "limit": 10}], prepare=_access_change(s.medic_id)),
            "access_changes.last": Case([{}], prepare=_access_change(s.medic_id)),
            "access_changes.expire": Case([{"cutoff": NOW + timedelta(seconds=1)}], prepare=_access_change(s.medic_id)),
            "users.by_id": Case([{"user_id": s.medic_id}]),
            "users.by_email": Case([{"email": s.medic_email}, {"email": "nobody@nowhere.example"}]),
            "users.rename": Case([{"user_id": s.medic_id, "display_name": "Renamed", "position": s.head + 1}]),
            "users.list.org": Case([org]),
            "users.list.medic": Case([medic]),
            "users.changed.org": Case(changed[::2]),
            "changes.after.org": Case(changed[::2]),
            "changes.after.medic": Case(changed[1:2]),
            "users.changed.medic": Case(changed[1:2]),
            "conversations.insert": Case(
                [
                    {
                        "id": str(uuid.uuid4()),
                        "org_id": fresh_org,
                        "type": "direct",
                        "medic_id": fresh_user,
                        "created_at": NOW,
                        "position": 2,
                    }
                ],
                prepare=_fresh_org(fresh_org, fresh_user),
            ),
            "conversations.by_id": Case([{"conversation_id": s.direct_id}]),
            "conversations.by_ids": Case([{"ids": ids[:1]}, {"ids": ids}, {"ids": ids + ids + ids}]),
            "conversations.direct_of": Case([{"medic_id": s.medic_id}]),
            "conversations.touch": Case([{"conversation_id": s.direct_id, "position": s.head + 1}]),
            "conversations.list.org": Case([org]),
            "conversations.list.medic": Case([medic]),
            "conversations.changed.org": Case(changed[::2]),
            "conversations.changed.medic": Case(changed[1:2]),
            "conversations.unread_counts": Case(
                [{"user_id": s.medic_id, "ids": ids}, {"user_id": s.admin_id, "ids": ids}]
            ),
            "messages.send.message": Case([send | {"first": s.head + 1}]),
            "messages.send.preview": Case([send | {"first": s.head + 1}]),
            "messages.send.postgresql": Case([send | {"count": 2}]),
            "messages.by_id": Case([{"message_id": s.message_id}]),
            "messages.by_key": Case([{"sender_id": s.medic_id, "key": s.message_key}]),
            "messages.send_context": Case(
                [
                    {"sender_id": s.medic_id, "conversation_id": s.direct_id, "key": s.message_key},
                    {"sender_id": s.medic_id, "conversation_id": s.broadcast_id, "key": "unused"},
                    {"sender_id": s.admin_id, "conversation_id": "no-such", "key": "unused"},
                    {"sender_id": "no-such", "conversation_id": s.direct_id, "key": s.message_key},
                ]
            ),
            "messages.thread": Case(
                [
                    {"conversation_id": s.direct_id, "before": 2**63 - 1, "limit": 2},
                    {"conversation_id": s.direct_id, "before": s.head, "limit": 50},
                ]
            ),
            "messages.latest_in": Case([{"conversation_id": s.direct_id}]),
            "messages.newest_per_conversation": Case([{"ids": ids, "per": 1}, {"ids": ids[:2], "per": 100}]),
            "messages.changed.org": Case(changed[::2]),
            "messages.changed.medic": Case(changed[1:2]),
            "reads.get": Case([{"conversation_id": s.broadcast_id, "user_id": s.medic_id}]),
            "reads.insert": Case(
                [
                    {
                        "conversation_id": s.broadcast_id,
                        "user_id": s.admin_id,
                        "org_id": s.org_id,
                        "last_read_position": 1,
                        "last_read_at": NOW,
                        "position": s.head + 1,
                    }
                ]
            ),
            "reads.move": Case(
                [
                    {
                        "conversation": s.broadcast_id,
                        "user": s.medic_id,
                        "target": s.head,
                        "at": NOW,
                        "new_position": s.head + 1,
                    }
                ]
            ),
            "reads.of_conversation": Case([{"conversation_id": s.broadcast_id}]),
            "reads.for_conversations": Case([{"ids": ids}, {"ids": ids[1:2]}]),
            "reads.positions_of_user": Case([{"user_id": s.medic_id, "ids": ids}]),
            "reads.in.org": Case([org]),
            "reads.in.medic": Case([medic]),
            "reads.changed.org": Case(changed[::2]),
            "reads.changed.medic": Case(changed[1:2]),
            "migrate.lock": Case([{"key": 0x5C_C0_33_A2}]),
            "database.ping": Case([{}]),
        }
        | _throttle_cases()
        | _push_cases(s)
    )


async def _seed(stack: Stack) -> Seed:
    world = await stack.orgs.make(admins=1, medics=2)
    admin, medic, neighbour = world.admins[0], world.medics[0], world.medics[1]
    assert medic.conversation_id is not None and neighbour.conversation_id is not None
    await stack.orgs.send(admin, world.broadcast_id, "to everyone")
    sent = await stack.orgs.send(medic, medic.conversation_id, "from the field")
    await stack.orgs.send(neighbour, neighbour.conversation_id, "from next door")
    await stack.orgs.send(admin, medic.conversation_id, "noted")
    for member, target in (
        (medic, world.broadcast_id),
        (neighbour, world.broadcast_id),
        (admin, medic.conversation_id),
    ):
        response = await stack.client.post(f"/v1/conversations/{target}/read", headers=member.headers)
        assert response.status_code == 200, response.text
    head = await stack.db.read("test_head", stream.current_position, world.org_id)
    return Seed(
        org_id=world.org_id,
        org_name=world.name,
        admin_id=admin.id,
        medic_id=medic.id,
        medic_email=medic.email,
        neighbour_id=neighbour.id,
        direct_id=medic.conversation_id,
        broadcast_id=world.broadcast_id,
        message_id=sent["id"],
        message_key=sent["idempotency_key"],
        head=head,
    )


@dataclass
class Outcome:
    statement: str
    fast: list[tuple[Any, ...]] | int
    plain: list[tuple[Any, ...]] | int


def _returns_rows(statement: Statement) -> bool:
    return bool(getattr(statement.statement, "exported_columns", ()))


def _run_way(conn: Connection, statement: Statement, case: Case, way: str) -> list[list[tuple[Any, ...]] | int]:
    """The statement's outcome for each parameter set, `fast` (its own executor) or `plain`
    (SQLAlchemy's `conn.execute`), each in a savepoint rolled back afterwards."""
    results: list[list[tuple[Any, ...]] | int] = []
    for params in case.params:
        with savepoint(conn):
            if case.prepare is not None:
                case.prepare(conn)
            if way == "fast":
                fast = statement.rows(conn, **params) if _returns_rows(statement) else statement.run(conn, **params)
                results.append([tuple(row) for row in fast] if isinstance(fast, list) else fast)
            else:
                assert isinstance(conn, SAConnection)
                result = conn.execute(statement.statement, params)
                results.append([tuple(row) for row in result] if result.returns_rows else result.rowcount)
    return results


def _run_all(conn: Connection, cases: dict[str, Case], way: str) -> dict[str, list[list[tuple[Any, ...]] | int]]:
    return {
        name: _run_way(conn, statement, cases[name], way)
        for name, statement in sorted(REGISTRY.items())
        if statement.dialects is None or conn.dialect.name in statement.dialects
    }


async def _fast_and_plain(stack: Stack, name: str, fn: Callable[..., T], *args: Any) -> tuple[T, T]:
    """`fn(conn, *args, way)` both ways: on SQLite both on the server's connection; on PostgreSQL
    the fast way on the server's (`PgConnection`), the plain way on SQLAlchemy's (the CLI's)."""
    fast = await stack.db.write(name, fn, *args, "fast")
    if stack.dialect == "sqlite":
        return fast, await stack.db.write(name, fn, *args, "plain")
    return fast, await asyncio.to_thread(blocking.run, stack.settings.database_url, name, fn, *args, "plain")


def _ordered(statement: Statement) -> bool:
    """Whether the statement says in which order its rows come (a RETURNING of one row does)."""
    query = statement.statement
    return not isinstance(query, Select | CompoundSelect) or bool(query._order_by_clauses)


def _same(fast: Any, plain: Any) -> bool:
    if type(fast) is not type(plain):
        return False
    if isinstance(fast, datetime):
        return fast == plain and fast.utcoffset() == timedelta(0) and plain.utcoffset() == timedelta(0)
    return bool(fast == plain)


def _rows_agree(fast: Sequence[tuple[Any, ...]], plain: Sequence[tuple[Any, ...]]) -> bool:
    return len(fast) == len(plain) and all(
        len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
        for a, b in zip(fast, plain, strict=True)
    )


def test_every_statement_has_a_parity_case() -> None:
    seed = Seed("o", "n", "a", "m", "m@x", "n2", "d", "b", "msg", "k", 10)
    assert sorted(_cases(seed)) == sorted(REGISTRY)


async def test_every_statement_gives_the_same_rows_both_ways(stack: Stack) -> None:
    async with asyncio.timeout(TIMEOUT_SECONDS):
        seed = await _seed(stack)
        cases = _cases(seed)
        fast, plain = await _fast_and_plain(stack, "test_statement_parity", _run_all, cases)
    outcomes = [Outcome(name, one, other) for name in fast for one, other in zip(fast[name], plain[name], strict=True)]
    ran = {outcome.statement for outcome in outcomes}
    expected = {name for name, s in REGISTRY.items() if s.dialects is None or stack.dialect in s.dialects}
    assert ran == expected
    for outcome in outcomes:
        if isinstance(outcome.fast, int):
            assert outcome.fast == outcome.plain, outcome
        else:
            assert isinstance(outcome.plain, list), outcome
            if cases[outcome.statement].sequenced:
                shape = [[type(v) for v in row] for row in outcome.fast]
                assert shape == [[type(v) for v in row] for row in outcome.plain], outcome
            elif _ordered(REGISTRY[outcome.statement]):
                assert _rows_agree(outcome.fast, outcome.plain), outcome
            else:  # no ORDER BY: on PostgreSQL the two ways are two connections, free to differ in order
                assert _rows_agree(sorted(outcome.fast, key=repr), sorted(outcome.plain, key=repr)), outcome
    for name in ran:  # the comparison is only worth something where rows came back (or changed)
        if cases[name].rows_expected:
            assert any(o.fast for o in outcomes if o.statement == name), name


@pytest.mark.parametrize(
    "value",
    [NOW, datetime(2026, 1, 1, tzinfo=UTC), datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=UTC)],
    ids=["micros", "whole-second", "one-micro"],
)
def test_utc_datetimes_are_stored_on_sqlite_in_sqlalchemys_own_format(value: datetime) -> None:
    """UTCDateTime's own SQLite processors write and read exactly what DATETIME's would."""
    dialect = sqlite.dialect()
    ours_bind = UTCDateTime().bind_processor(dialect)
    theirs_bind = DateTime().dialect_impl(dialect).bind_processor(dialect)
    ours_result = UTCDateTime().result_processor(dialect, None)
    assert ours_bind is not None and theirs_bind is not None and ours_result is not None
    stored = ours_bind(value)
    assert stored == theirs_bind(value.replace(tzinfo=None))
    assert ours_result(stored) == value and ours_result(stored).tzinfo is UTC
    with pytest.raises(ValueError):
        ours_bind(value.replace(tzinfo=None))


def _duplicate(conn: Connection, seed: Seed, way: str) -> type[BaseException] | None:
    statement = REGISTRY["users.insert"]
    params = _cases(seed)["users.insert"].params[0] | {"email": seed.medic_email}  # taken
    with savepoint(conn):
        try:
            if way == "fast":
                statement.rows(conn, **params)
            else:
                assert isinstance(conn, SAConnection)
                conn.execute(statement.statement, params)
        except Exception as exc:
            return type(exc)
    return None


async def test_a_violated_constraint_fails_the_same_way_both_ways(stack: Stack) -> None:
    async with asyncio.timeout(TIMEOUT_SECONDS):
        seed = await _seed(stack)
        failures = await _fast_and_plain(stack, "test_statement_duplicate", _duplicate, seed)
    assert failures[0] is failures[1] and failures[0] is not None and issubclass(failures[0], IntegrityError), failures


def _without_user_id(conn: Connection) -> list[Sequence[Any]]:
    return REGISTRY["users.by_id"].rows(conn)


async def test_a_missing_parameter_is_refused_not_bound_as_null(stack: Stack) -> None:
    with pytest.raises(KeyError, match="user_id"):
        await asyncio.wait_for(stack.db.read("test_missing_parameter", _without_user_id), TIMEOUT_SECONDS)
