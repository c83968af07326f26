"""Conversations: one direct conversation per medic, one broadcast per org."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Select, bindparam, func, insert, or_, select, update

from sitecomms.protocol.enums import ConversationType
from sitecomms.store.rows import ConversationRow
from sitecomms.store.schema import conversations, messages, read_status, users
from sitecomms.store.scopes import SHAPES, Scope, changed_after
from sitecomms.store.statements import Connection, Statement

# The columns of a ConversationRow, in its field order; `medic_name` from the medic's user row.
COLUMNS = [
    users.c.display_name.label(name) if name == "medic_name" else conversations.c[name]
    for name in ConversationRow.__dataclass_fields__
]
ROW_SELECT = select(*COLUMNS).select_from(conversations.outerjoin(users, users.c.id == conversations.c.medic_id))


def scope_clause(medic: bool) -> ColumnElement[bool]:
    """The conversations a scope may see: the org's (`:org_id`), or the broadcast and `:medic_id`'s own."""
    in_org = conversations.c.org_id == bindparam("org_id")
    if not medic:
        return in_org
    return in_org & or_(
        conversations.c.type == ConversationType.BROADCAST.value, conversations.c.medic_id == bindparam("medic_id")
    )


def _scoped(medic: bool) -> Select[tuple[object, ...]]:
    return ROW_SELECT.where(scope_clause(medic))


_INSERT = Statement(
    "conversations.insert",
    insert(conversations).values(
        {c.name: bindparam(c.name) for c in conversations.c if not c.name.startswith("last_message")}
    ),
)
_BY_ID = Statement("conversations.by_id", ROW_SELECT.where(conversations.c.id == bindparam("conversation_id")))
_BY_IDS = Statement("conversations.by_ids", ROW_SELECT.where(conversations.c.id.in_(bindparam("ids", expanding=True))))
_DIRECT_OF = Statement("conversations.direct_of", ROW_SELECT.where(conversations.c.medic_id == bindparam("medic_id")))
_TOUCH = Statement(
    "conversations.touch",
    update(conversations)
    .where(conversations.c.id == bindparam("conversation_id"))
    .values(position=bindparam("position")),
)
# Per scope shape, [whole org, medic]. Most recent activity first; those without messages last.
_LIST = [
    Statement(
        f"conversations.list.{shape}",
        _scoped(medic).order_by(
            conversations.c.last_message_at.is_(None),
            conversations.c.last_message_at.desc(),
            conversations.c.created_at.desc(),
            conversations.c.id,
        ),
    )
    for shape, medic in SHAPES
]
CHANGED = changed_after("conversations", _scoped, conversations.c.position)
_read_upto = func.coalesce(read_status.c.last_read_position, 0)
_UNREAD = Statement(
    "conversations.unread_counts",
    select(messages.c.conversation_id, func.count())
    .select_from(
        messages.outerjoin(
            read_status,
            (read_status.c.conversation_id == messages.c.conversation_id)
            & (read_status.c.user_id == bindparam("user_id")),
        )
    )
    .where(
        messages.c.conversation_id.in_(bindparam("ids", expanding=True)),
        messages.c.sender_id != bindparam("user_id"),
        messages.c.position > _read_upto,
    )
    .group_by(messages.c.conversation_id),
)


def insert_conversation(
    conn: Connection,
    *,
    conversation_id: str,
    org_id: str,
    type: str,
    medic_id: str | None,
    now: datetime,
    position: int,
) -> None:
    _INSERT.run(
        conn, id=conversation_id, org_id=org_id, type=type, medic_id=medic_id, created_at=now, position=position
    )


def get_conversation(conn: Connection, conversation_id: str) -> ConversationRow | None:
    row = _BY_ID.first(conn, conversation_id=conversation_id)
    return None if row is None else ConversationRow(*row)


def get_conversations(conn: Connection, conversation_ids: list[str]) -> dict[str, ConversationRow]:
    if not conversation_ids:
        return {}
    return {row[0]: ConversationRow(*row) for row in _BY_IDS.rows(conn, ids=conversation_ids)}


def get_direct_conversation_of(conn: Connection, medic_id: str) -> ConversationRow | None:
    row = _DIRECT_OF.first(conn, medic_id=medic_id)
    return None if row is None else ConversationRow(*row)


def list_conversations(conn: Connection, scope: Scope) -> list[ConversationRow]:
    """Most recent activity first; conversations without messages last, newest first."""
    statement = _LIST[scope.shape]
    return [ConversationRow(*row) for row in statement.rows(conn, org_id=scope.org_id, medic_id=scope.medic_id)]


def conversations_changed_since(conn: Connection, scope: Scope, *, after: int, limit: int) -> list[ConversationRow]:
    statement = CHANGED[scope.shape]
    rows = statement.rows(conn, org_id=scope.org_id, medic_id=scope.medic_id, after=after, limit=limit)
    return [ConversationRow(*row) for row in rows]


def touch(conn: Connection, conversation_id: str, *, position: int) -> None:
    _TOUCH.run(conn, conversation_id=conversation_id, position=position)


def unread_counts(conn: Connection, user_id: str, conversation_ids: list[str]) -> dict[str, int]:
    """Messages after the user's read position that the user did not send, per conversation."""
    if not conversation_ids:
        return {}
    return {cid: int(n) for cid, n in _UNREAD.rows(conn, user_id=user_id, ids=conversation_ids)}
