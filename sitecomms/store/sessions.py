"""Sessions: one row per signed-in device, with its refresh secret's hash and its revocation.

`access(session_id)` is the read every request's authorisation rests on (services/access.py
caches it): the session and its user in one row.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, insert, select, update

from sitecomms.store.pg import one_read
from sitecomms.store.rows import AccessRow, SessionRow
from sitecomms.store.schema import sessions, users
from sitecomms.store.statements import Connection, Statement

_COLUMNS = [sessions.c[name] for name in SessionRow.__dataclass_fields__]
LISTED = 200  # "my devices" lists the most recently used this many (a script signing in in a loop makes thousands)

_INSERT = Statement("sessions.insert", insert(sessions).values({c.name: bindparam(c.name) for c in sessions.c}))
_BY_ID = Statement("sessions.by_id", select(*_COLUMNS).where(sessions.c.id == bindparam("session_id")))
# The same, locked until the transaction ends (PostgreSQL; SQLite's one writer needs no lock):
# what is bound to a session meanwhile is either refused or seen by a revocation.
_LOCK = Statement("sessions.lock", select(*_COLUMNS).where(sessions.c.id == bindparam("session_id")).with_for_update())
_OF_USER = Statement(
    "sessions.of_user",
    select(*_COLUMNS)
    .where(sessions.c.user_id == bindparam("user_id"), sessions.c.revoked_at.is_(None))
    .order_by(sessions.c.last_used_at.desc(), sessions.c.id)
    .limit(LISTED),
)
_ACCESS = Statement(
    "sessions.access",
    select(
        sessions.c.id,
        users.c.id,
        users.c.org_id,
        users.c.role,
        users.c.active,
        sessions.c.revoked_at.is_not(None),
        sessions.c.last_used_at,
    )
    .join(users, users.c.id == sessions.c.user_id)
    .where(sessions.c.id == bindparam("session_id"), sessions.c.org_id == users.c.org_id),
)
_ROTATE = Statement(
    "sessions.rotate",
    update(sessions)
    .where(
        sessions.c.id == bindparam("session_id"),
        sessions.c.generation == bindparam("generation"),  # a concurrent refresh of the same token loses
        sessions.c.revoked_at.is_(None),
    )
    .values(
        refresh_hash=bindparam("refresh_hash"),
        generation=sessions.c.generation + 1,
        last_used_at=bindparam("now"),
        rotated_at=bindparam("now"),
        last_address=bindparam("address"),
    ),
)
_TOUCH = Statement(
    "sessions.touch",
    update(sessions)
    .where(sessions.c.id == bindparam("session_id"))
    .values(last_used_at=bindparam("now"), last_address=bindparam("address")),
)
_REVOKE = Statement(
    "sessions.revoke",
    update(sessions)
    .where(sessions.c.id == bindparam("session_id"), sessions.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("now"), revoked_reason=bindparam("reason")),
)
_REVOKE_USER = Statement(
    "sessions.revoke_user",
    update(sessions)
    .where(
        sessions.c.user_id == bindparam("owner"),
        sessions.c.id != bindparam("keep"),
        sessions.c.revoked_at.is_(None),
    )
    .values(revoked_at=bindparam("now"), revoked_reason=bindparam("reason")),
)


def insert_session(conn: Connection, row: SessionRow) -> None:
    _INSERT.run(conn, **{name: getattr(row, name) for name in SessionRow.__dataclass_fields__})


def get_session(conn: Connection, session_id: str) -> SessionRow | None:
    row = _BY_ID.first(conn, session_id=session_id)
    return None if row is None else SessionRow(*row)


def lock_session(conn: Connection, session_id: str) -> SessionRow | None:
    """The session, its row locked for this write transaction (a revocation waits for it)."""
    row = _LOCK.first(conn, session_id=session_id)
    return None if row is None else SessionRow(*row)


def live_sessions_of(conn: Connection, user_id: str) -> list[SessionRow]:
    """The user's sessions not revoked, most recently used first, at most `LISTED` (expired ones
    included: the caller knows the lifetime)."""
    return [SessionRow(*row) for row in _OF_USER.rows(conn, user_id=user_id)]


@one_read
def access(conn: Connection, session_id: str) -> AccessRow | None:
    row = _ACCESS.first(conn, session_id=session_id)
    return None if row is None else AccessRow(*row)


def rotate(
    conn: Connection, session_id: str, *, generation: int, refresh_hash: str, now: datetime, address: str
) -> bool:
    """Move the session from `generation` to the next; False if it is not (any longer) there."""
    return (
        _ROTATE.run(
            conn, session_id=session_id, generation=generation, refresh_hash=refresh_hash, now=now, address=address
        )
        == 1
    )


def touch(conn: Connection, session_id: str, *, now: datetime, address: str) -> None:
    _TOUCH.run(conn, session_id=session_id, now=now, address=address)


def revoke(conn: Connection, session_id: str, *, now: datetime, reason: str) -> bool:
    return _REVOKE.run(conn, session_id=session_id, now=now, reason=reason) == 1


def revoke_all_of(conn: Connection, user_id: str, *, now: datetime, reason: str, keep: str = "") -> int:
    """Revoke every live session of the user but `keep`; how many were revoked."""
    return _REVOKE_USER.run(conn, owner=user_id, keep=keep, now=now, reason=reason)
