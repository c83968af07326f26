"""Web Push storage: subscriptions, the per-org push cursor, and the deliveries due.

A delivery is one push owed to one device for one message. The planner (services/push_delivery.py)
reads the messages after an org's cursor and records their deliveries in the transaction that
moves the cursor; workers claim due deliveries for a lease (`FOR UPDATE SKIP LOCKED` on
PostgreSQL, so two processes never claim one row; SQLite's single writer serialises claims),
and delete or reschedule each once the push service has answered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, case, delete, func, insert, select, union, update
from sqlalchemy.dialects import postgresql, sqlite

from sitecomms.protocol.enums import Role
from sitecomms.store.pg import one_read
from sitecomms.store.rows import DuePush, PushSubscriptionRow, PushTarget
from sitecomms.store.schema import (
    messages,
    org_streams,
    push_cursors,
    push_deliveries,
    push_subscriptions,
    sessions,
    users,
)
from sitecomms.store.statements import Connection, Statement

NEVER = datetime(1970, 1, 1, tzinfo=UTC)  # leased_until of a delivery no worker holds

_SUB = push_subscriptions.c
_DEL = push_deliveries.c
_COLUMNS = [_SUB[name] for name in PushSubscriptionRow.__dataclass_fields__]

_SUB_INSERT = Statement(
    "push.subscription.insert",
    insert(push_subscriptions).values({c.name: bindparam(c.name) for c in push_subscriptions.c}),
)
_SUB_BY_ENDPOINT = Statement(
    "push.subscription.by_endpoint", select(*_COLUMNS).where(_SUB.endpoint == bindparam("endpoint"))
)
_SUB_REBIND = Statement(
    "push.subscription.rebind",
    update(push_subscriptions)
    .where(_SUB.id == bindparam("subscription_id"))
    .values(
        org_id=bindparam("org_id"),
        user_id=bindparam("user_id"),
        session_id=bindparam("session_id"),
        p256dh=bindparam("p256dh"),
        auth=bindparam("auth"),
    ),
)
_SUB_OF_USER = Statement(
    "push.subscription.of_user",
    select(*_COLUMNS).where(_SUB.user_id == bindparam("user_id")).order_by(_SUB.created_at, _SUB.id),
)
_SUB_DELETE_MINE = Statement(
    "push.subscription.delete_mine",
    delete(push_subscriptions).where(_SUB.id == bindparam("subscription_id"), _SUB.user_id == bindparam("user_id")),
)
_SUB_DELETE_OF_SESSION = Statement(
    "push.subscription.delete_of_session", delete(push_subscriptions).where(_SUB.session_id == bindparam("session_id"))
)
_SUB_DELETE_OF_USER = Statement(
    "push.subscription.delete_of_user",
    delete(push_subscriptions).where(_SUB.user_id == bindparam("user_id"), _SUB.session_id != bindparam("keep")),
)
_SUB_DELETE_IDS = Statement(
    "push.subscription.delete_ids", delete(push_subscriptions).where(_SUB.id.in_(bindparam("ids", expanding=True)))
)

_CURSOR_START_SQLITE = Statement(
    "push.cursor.start.sqlite",
    sqlite.insert(push_cursors)
    .values(org_id=bindparam("org_id"), position=bindparam("position"))
    .on_conflict_do_nothing(index_elements=["org_id"]),
    dialects=("sqlite",),
)
_CURSOR_START_POSTGRES = Statement(
    "push.cursor.start.postgresql",
    postgresql.insert(push_cursors)
    .values(org_id=bindparam("org_id"), position=bindparam("position"))
    .on_conflict_do_nothing(index_elements=["org_id"]),
    dialects=("postgresql",),
)
# Orgs with messages not yet planned, each locked for this transaction (another process's
# planner skips it; SQLite has no row locks and needs none: one writer).
_BEHIND = Statement(
    "push.cursor.behind",
    select(push_cursors.c.org_id, push_cursors.c.position, push_cursors.c.after_subscription, org_streams.c.position)
    .join(org_streams, org_streams.c.org_id == push_cursors.c.org_id)
    .where(push_cursors.c.position < org_streams.c.position)
    .order_by(push_cursors.c.org_id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True, of=push_cursors),
)
_any_behind = (
    select(push_cursors.c.org_id)
    .join(org_streams, org_streams.c.org_id == push_cursors.c.org_id)
    .where(push_cursors.c.position < org_streams.c.position)
)
_CURSOR_MOVE = Statement(
    "push.cursor.move",
    update(push_cursors)
    .where(push_cursors.c.org_id == bindparam("org"))
    .values(position=bindparam("position"), after_subscription=bindparam("after_subscription")),
)


def _live_targets(*who: ColumnElement[bool]) -> Select[tuple[str, str, str]]:
    """Subscriptions of the org's active users picked by `who`, whose session is live. From the
    users to their subscriptions (by `user_id`): a direct message's few users never walk the
    org's every subscription."""
    return (
        select(_SUB.id, _SUB.user_id, users.c.role)
        .select_from(users)
        .join(push_subscriptions, _SUB.user_id == users.c.id)
        .join(sessions, sessions.c.id == _SUB.session_id)
        .where(
            users.c.org_id == bindparam("org_id"),
            users.c.active.is_(True),
            sessions.c.revoked_at.is_(None),
            sessions.c.last_used_at >= bindparam("active_since"),
            *who,
        )
    )


# Who could be due a push for a message (the visibility module decides who is): the whole org for
# a broadcast; the org's admins and the one medic for a direct conversation (a UNION: a medic
# since made admin is in both halves once).
# A page of the org's devices (a broadcast's possible audience) after `after`, in id order: from
# the subscriptions (by the (org_id, id) index, in order, so the LIMIT stops the walk) to their
# users and sessions. The planner reads only as many as one transaction plans.
_TARGETS = Statement(
    "push.targets.org",
    select(_SUB.id, _SUB.user_id, users.c.role)
    .select_from(push_subscriptions)
    .join(users, users.c.id == _SUB.user_id)
    .join(sessions, sessions.c.id == _SUB.session_id)
    .where(
        _SUB.org_id == bindparam("org_id"),
        _SUB.id > bindparam("after"),
        users.c.active.is_(True),
        sessions.c.revoked_at.is_(None),
        sessions.c.last_used_at >= bindparam("active_since"),
    )
    .order_by(_SUB.id)
    .limit(bindparam("limit")),
)
_TARGETS_DIRECT = Statement(
    "push.targets.direct",
    union(_live_targets(users.c.role == Role.ADMIN.value), _live_targets(users.c.id == bindparam("medic_id"))),
)  # in no order: the planner sorts

_DELIVERY_INSERT = Statement(
    "push.delivery.insert",
    insert(push_deliveries)
    .inline()  # no RETURNING of the new id on PostgreSQL: nothing reads it
    .values(
        subscription_id=bindparam("subscription_id"),
        message_id=bindparam("message_id"),
        due_at=bindparam("due_at"),
        expires_at=bindparam("expires_at"),
        leased_until=bindparam("leased_until"),
        attempts=0,
        with_content=True,
    ),
)
_CLAIM = Statement(
    "push.delivery.claim",
    update(push_deliveries)
    .where(
        _DEL.id.in_(
            select(_DEL.id)
            .where(_DEL.due_at <= bindparam("now"), _DEL.leased_until <= bindparam("now"))
            .order_by(_DEL.due_at, _DEL.id)
            .limit(bindparam("limit"))
            .with_for_update(skip_locked=True)
        )
    )
    .values(leased_until=bindparam("until"), attempts=_DEL.attempts + 1)
    .returning(_DEL.id),
)
_sender = users.alias("sender")
_owner = users.alias("owner")
_DUE = Statement(
    "push.delivery.due",
    select(
        _DEL.id,
        _SUB.id,
        _SUB.endpoint,
        _SUB.p256dh,
        _SUB.auth,
        _owner.c.id,
        _owner.c.role,
        messages.c.org_id,
        messages.c.conversation_id,
        messages.c.id,
        messages.c.position,
        _DEL.expires_at,
        _DEL.attempts,
        _DEL.with_content,
        _sender.c.role,
        _sender.c.display_name,
        messages.c.content,
        _owner.c.org_id,
        messages.c.sender_id,
    )
    .join(push_subscriptions, _SUB.id == _DEL.subscription_id)
    .join(_owner, _owner.c.id == _SUB.user_id)
    .join(messages, messages.c.id == _DEL.message_id)
    .join(_sender, _sender.c.id == messages.c.sender_id)
    .where(_DEL.id.in_(bindparam("ids", expanding=True)))
    .order_by(_DEL.id),
)
_DELIVERY_DELETE_IDS = Statement(
    "push.delivery.delete_ids", delete(push_deliveries).where(_DEL.id.in_(bindparam("ids", expanding=True)))
)
_DELIVERY_RETRY = Statement(
    "push.delivery.retry",
    update(push_deliveries)
    .where(_DEL.id == bindparam("delivery_id"))
    .values(due_at=bindparam("due_at"), leased_until=NEVER, with_content=bindparam("with_content")),
)
# Whether some org has changes its push cursor has not reached, and when the next delivery no
# worker holds falls due (a leased one: when its lease runs out): a worker's poll, one read.
_next_due = select(
    func.min(case((_DEL.due_at > _DEL.leased_until, _DEL.due_at), else_=_DEL.leased_until))
).scalar_subquery()
_PENDING_WORK = Statement(
    "push.pending_work", select(_any_behind.exists().label("behind"), _next_due.label("next_due"))
)
_PENDING = Statement("push.delivery.pending", select(func.count()).select_from(push_deliveries))


# --- subscriptions ---------------------------------------------------------------------------


def insert_subscription(conn: Connection, row: PushSubscriptionRow) -> None:
    _SUB_INSERT.run(conn, **{name: getattr(row, name) for name in PushSubscriptionRow.__dataclass_fields__})


def subscription_by_endpoint(conn: Connection, endpoint: str) -> PushSubscriptionRow | None:
    row = _SUB_BY_ENDPOINT.first(conn, endpoint=endpoint)
    return None if row is None else PushSubscriptionRow(*row)


def rebind_subscription(conn: Connection, row: PushSubscriptionRow) -> None:
    """Move the subscription (same id and endpoint) to `row`'s session, user and keys."""
    _SUB_REBIND.run(
        conn,
        subscription_id=row.id,
        org_id=row.org_id,
        user_id=row.user_id,
        session_id=row.session_id,
        p256dh=row.p256dh,
        auth=row.auth,
    )


def subscriptions_of(conn: Connection, user_id: str) -> list[PushSubscriptionRow]:
    return [PushSubscriptionRow(*row) for row in _SUB_OF_USER.rows(conn, user_id=user_id)]


def delete_subscription_of(conn: Connection, subscription_id: str, user_id: str) -> bool:
    return _SUB_DELETE_MINE.run(conn, subscription_id=subscription_id, user_id=user_id) == 1


def delete_subscriptions_of_session(conn: Connection, session_id: str) -> int:
    return _SUB_DELETE_OF_SESSION.run(conn, session_id=session_id)


def delete_subscriptions_of_user(conn: Connection, user_id: str, *, keep_session: str = "") -> int:
    """Every subscription of the user but those of session `keep_session`."""
    return _SUB_DELETE_OF_USER.run(conn, user_id=user_id, keep=keep_session)


def delete_subscriptions(conn: Connection, ids: list[str]) -> int:
    return _SUB_DELETE_IDS.run(conn, ids=ids) if ids else 0


# --- planning --------------------------------------------------------------------------------


def start_cursor(conn: Connection, org_id: str, position: int) -> None:
    """The org's push cursor, at `position`, unless it has one."""
    statement = _CURSOR_START_SQLITE if conn.dialect.name == "sqlite" else _CURSOR_START_POSTGRES
    statement.run(conn, org_id=org_id, position=position)


def orgs_behind(conn: Connection, limit: int) -> list[tuple[str, int, str, int]]:
    """(org, cursor, last subscription planned of the next message, stream head) of orgs with
    changes after their push cursor, locked."""
    return [
        (str(org), int(cursor), str(after), int(head)) for org, cursor, after, head in _BEHIND.rows(conn, limit=limit)
    ]


@one_read
def pending_work(conn: Connection) -> tuple[bool, datetime | None]:
    """(whether some org has changes its push cursor has not reached, when the next delivery is due)."""
    row = _PENDING_WORK.first(conn)
    assert row is not None
    return bool(row[0]), row[1]


def move_cursor(conn: Connection, org_id: str, position: int, *, after_subscription: str = "") -> None:
    """Messages up to `position` are planned, and the next one for subscriptions up to
    `after_subscription` ("": for none)."""
    _CURSOR_MOVE.run(conn, org=org_id, position=position, after_subscription=after_subscription)


def targets_of_org(
    conn: Connection, org_id: str, *, after: str, limit: int, active_since: datetime
) -> list[PushTarget]:
    """Up to `limit` subscriptions of the org after `after` in id order (a broadcast's possible
    audience, a page at a time) whose session is live (not revoked, used since `active_since`)
    and whose user is active."""
    rows = _TARGETS.rows(conn, org_id=org_id, after=after, limit=limit, active_since=active_since)
    return [PushTarget(*row) for row in rows]


def targets_of_direct(conn: Connection, org_id: str, *, medic_id: str, active_since: datetime) -> list[PushTarget]:
    """As `targets_of_org`, all at once, for a direct conversation: the admins' and the medic's."""
    rows = _TARGETS_DIRECT.rows(conn, org_id=org_id, medic_id=medic_id, active_since=active_since)
    return [PushTarget(*row) for row in rows]


def record_deliveries(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Deliveries due: each `{subscription_id, message_id, due_at, expires_at, leased_until}`."""
    _DELIVERY_INSERT.run_many(conn, rows)


# --- delivering ------------------------------------------------------------------------------


def claim(conn: Connection, *, now: datetime, until: datetime, limit: int) -> list[int]:
    """Lease up to `limit` due deliveries until `until`; their ids (read what sending them takes
    with `due_pushes`, after the commit and off the writer)."""
    return [int(row[0]) for row in _CLAIM.rows(conn, now=now, until=until, limit=limit)]


def due_pushes(conn: Connection, ids: list[int]) -> list[DuePush]:
    """The deliveries `ids` (those still there) with what sending each takes."""
    return [DuePush(*row) for row in _DUE.rows(conn, ids=ids)] if ids else []


def delete_deliveries(conn: Connection, ids: list[int]) -> int:
    return _DELIVERY_DELETE_IDS.run(conn, ids=ids) if ids else 0


def retry_delivery(conn: Connection, delivery_id: int, *, due_at: datetime, with_content: bool) -> None:
    _DELIVERY_RETRY.run(conn, delivery_id=delivery_id, due_at=due_at, with_content=with_content)


@one_read
def pending(conn: Connection) -> int:
    """Deliveries recorded and not yet settled, in every org (the push queue's depth)."""
    return int(_PENDING.scalar(conn) or 0)
