"""The access-change log: who lost or changed access, in commit order (schema.access_changes)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete, func, insert, select

from sitecomms.store.pg import one_read
from sitecomms.store.schema import access_changes
from sitecomms.store.statements import Connection, Statement

_INSERT = Statement(
    "access_changes.insert",
    insert(access_changes)
    .values(at=bindparam("at"), user_id=bindparam("user_id"), session_id=bindparam("session_id"))
    .returning(access_changes.c.id),
)
_AFTER = Statement(
    "access_changes.after",
    select(access_changes.c.id, access_changes.c.user_id, access_changes.c.session_id)
    .where(access_changes.c.id > bindparam("after"))
    .order_by(access_changes.c.id)
    .limit(bindparam("limit")),
)
_LAST = Statement("access_changes.last", select(func.max(access_changes.c.id)))
_EXPIRE = Statement("access_changes.expire", delete(access_changes).where(access_changes.c.at < bindparam("cutoff")))


def record(conn: Connection, *, at: datetime, user_id: str, session_id: str | None = None) -> int:
    """Log a change to the user's access (one session's, or None: all of them); its id."""
    return int(_INSERT.scalar(conn, at=at, user_id=user_id, session_id=session_id))


@one_read
def changes_after(conn: Connection, after: int, limit: int) -> list[tuple[int, str, str | None]]:
    return [(int(row[0]), str(row[1]), row[2]) for row in _AFTER.rows(conn, after=after, limit=limit)]


@one_read
def last_change(conn: Connection) -> int:
    return int(_LAST.scalar(conn) or 0)


def expire(conn: Connection, cutoff: datetime) -> int:
    return _EXPIRE.run(conn, cutoff=cutoff)
