"""Read status: how far each user has read each conversation. Only ever moves forward."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Select, bindparam, insert, or_, select, update

from sitecomms.protocol.enums import ConversationType
from sitecomms.store.conversations import scope_clause
from sitecomms.store.rows import ReadStatusRow
from sitecomms.store.schema import conversations, read_status
from sitecomms.store.scopes import SHAPES, Scope, changed_after
from sitecomms.store.statements import Connection, Statement

_COLUMNS = [read_status.c[name] for name in ReadStatusRow.__dataclass_fields__]
_SELECT = select(*_COLUMNS)


def _scoped(medic: bool) -> Select[tuple[object, ...]]:
    """The read statuses a scope may see: the org's; or, for a medic, every one in their direct
    conversation and only their own in the broadcast."""
    if not medic:
        return _SELECT.where(read_status.c.org_id == bindparam("org_id"))
    own_or_direct: ColumnElement[bool] = or_(
        conversations.c.type == ConversationType.DIRECT.value, read_status.c.user_id == bindparam("medic_id")
    )
    return _SELECT.select_from(
        read_status.join(conversations, conversations.c.id == read_status.c.conversation_id)
    ).where(scope_clause(True), own_or_direct)


_GET = Statement(
    "reads.get",
    _SELECT.where(
        read_status.c.conversation_id == bindparam("conversation_id"), read_status.c.user_id == bindparam("user_id")
    ),
)
_INSERT = Statement(
    "reads.insert", insert(read_status).values({c.name: bindparam(c.name) for c in read_status.c}).returning(*_COLUMNS)
)
# (An UPDATE's parameters are not named after its table's columns: on `conn.execute`,
# SQLAlchemy would take them for values to SET.)
_MOVE = Statement(
    "reads.move",
    update(read_status)
    .where(
        read_status.c.conversation_id == bindparam("conversation"),
        read_status.c.user_id == bindparam("user"),
        read_status.c.last_read_position < bindparam("target"),
    )
    .values(last_read_position=bindparam("target"), last_read_at=bindparam("at"), position=bindparam("new_position"))
    .returning(*_COLUMNS),
)
_OF = Statement("reads.of_conversation", _SELECT.where(read_status.c.conversation_id == bindparam("conversation_id")))
_FOR = Statement(
    "reads.for_conversations", _SELECT.where(read_status.c.conversation_id.in_(bindparam("ids", expanding=True)))
)
_POSITIONS_OF_USER = Statement(
    "reads.positions_of_user",
    select(read_status.c.conversation_id, read_status.c.last_read_position).where(
        read_status.c.user_id == bindparam("user_id"),
        read_status.c.conversation_id.in_(bindparam("ids", expanding=True)),
    ),
)
# Per scope shape, [whole org, medic].
_IN = [Statement(f"reads.in.{shape}", _scoped(medic).order_by(read_status.c.position)) for shape, medic in SHAPES]
CHANGED = changed_after("reads", _scoped, read_status.c.position)


def get_read_status(conn: Connection, conversation_id: str, user_id: str) -> ReadStatusRow | None:
    row = _GET.first(conn, conversation_id=conversation_id, user_id=user_id)
    return None if row is None else ReadStatusRow(*row)


def move_read_status(
    conn: Connection,
    *,
    conversation_id: str,
    user_id: str,
    org_id: str,
    target: int,
    at: datetime,
    position: int,
    exists: bool,
) -> ReadStatusRow | None:
    """Move (or first record) a user's read position forward to `target`, at stream `position`;
    the row as written, or None when it already stood at or past `target`."""
    if exists:
        row = _MOVE.first(conn, conversation=conversation_id, user=user_id, target=target, at=at, new_position=position)
    else:
        row = _INSERT.first(
            conn,
            conversation_id=conversation_id,
            user_id=user_id,
            org_id=org_id,
            last_read_position=target,
            last_read_at=at,
            position=position,
        )
    return None if row is None else ReadStatusRow(*row)


def read_statuses_of(conn: Connection, conversation_id: str) -> list[ReadStatusRow]:
    return [ReadStatusRow(*row) for row in _OF.rows(conn, conversation_id=conversation_id)]


def read_statuses_in(conn: Connection, scope: Scope) -> list[ReadStatusRow]:
    rows = _IN[scope.shape].rows(conn, org_id=scope.org_id, medic_id=scope.medic_id)
    return [ReadStatusRow(*row) for row in rows]


def read_statuses_changed_since(conn: Connection, scope: Scope, *, after: int, limit: int) -> list[ReadStatusRow]:
    statement = CHANGED[scope.shape]
    rows = statement.rows(conn, org_id=scope.org_id, medic_id=scope.medic_id, after=after, limit=limit)
    return [ReadStatusRow(*row) for row in rows]


def read_positions_of_user(conn: Connection, user_id: str, conversation_ids: list[str]) -> dict[str, int]:
    if not conversation_ids:
        return {}
    return {cid: int(pos) for cid, pos in _POSITIONS_OF_USER.rows(conn, user_id=user_id, ids=conversation_ids)}


def read_statuses_for(conn: Connection, conversation_ids: list[str]) -> list[ReadStatusRow]:
    if not conversation_ids:
        return []
    return [ReadStatusRow(*row) for row in _FOR.rows(conn, ids=conversation_ids)]
