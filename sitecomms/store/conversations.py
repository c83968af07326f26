"""Conversations: one direct conversation per medic, one broadcast per org."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Connection, bindparam, func, insert, select, update

from sitecomms.store.prepared import Prepared
from sitecomms.store.rows import ConversationRow, build
from sitecomms.store.schema import conversations, messages, read_status, users

# The columns of a ConversationRow, in its field order (rows build positionally or by name).
_ROW_SELECT = select(
    *[
        users.c.display_name.label(name) if name == "medic_name" else conversations.c[name]
        for name in ConversationRow.__dataclass_fields__
    ]
).select_from(conversations.outerjoin(users, users.c.id == conversations.c.medic_id))


_BY_ID = Prepared(_ROW_SELECT.where(conversations.c.id == bindparam("conversation_id")))
_CHANGED_IN_ORG = Prepared(
    _ROW_SELECT.where(conversations.c.org_id == bindparam("org"), conversations.c.position > bindparam("after"))
    .order_by(conversations.c.position)
    .limit(bindparam("limit"))
)
_RECORD_LAST_MESSAGE = Prepared(
    update(conversations)
    .where(conversations.c.id == bindparam("conversation_id"))
    .values(
        last_message_at=bindparam("at"),
        last_message_preview=bindparam("preview"),
        last_message_position=bindparam("message_position"),
        position=bindparam("new_position"),
    )
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
    conn.execute(
        insert(conversations).values(
            id=conversation_id,
            org_id=org_id,
            type=type,
            medic_id=medic_id,
            created_at=now,
            position=position,
        )
    )


def get_conversation(conn: Connection, conversation_id: str) -> ConversationRow | None:
    row = _BY_ID.first(conn, conversation_id=conversation_id)
    return None if row is None else ConversationRow(*row)


def get_conversations(conn: Connection, conversation_ids: list[str]) -> dict[str, ConversationRow]:
    if not conversation_ids:
        return {}
    rows = conn.execute(_ROW_SELECT.where(conversations.c.id.in_(conversation_ids))).mappings()
    return {row["id"]: build(ConversationRow, row) for row in rows}


def get_direct_conversation_of(conn: Connection, medic_id: str) -> ConversationRow | None:
    row = conn.execute(_ROW_SELECT.where(conversations.c.medic_id == medic_id)).mappings().first()
    return None if row is None else build(ConversationRow, row)


def list_conversations(conn: Connection, visible: ColumnElement[bool]) -> list[ConversationRow]:
    """Most recent activity first; conversations without messages last, newest first."""
    query = _ROW_SELECT.where(visible).order_by(
        conversations.c.last_message_at.is_(None),
        conversations.c.last_message_at.desc(),
        conversations.c.created_at.desc(),
        conversations.c.id,
    )
    return [build(ConversationRow, r) for r in conn.execute(query).mappings()]


def conversations_changed_since(
    conn: Connection, visible: ColumnElement[bool], *, after: int, limit: int
) -> list[ConversationRow]:
    query = _ROW_SELECT.where(visible, conversations.c.position > after).order_by(conversations.c.position).limit(limit)
    return [build(ConversationRow, r) for r in conn.execute(query).mappings()]


def conversations_changed_in_org(conn: Connection, org_id: str, *, after: int, limit: int) -> list[ConversationRow]:
    """Every conversation of the org changed after `after`: the server's own read, not any viewer's."""
    return [ConversationRow(*row) for row in _CHANGED_IN_ORG.rows(conn, org=org_id, after=after, limit=limit)]


def record_last_message(
    conn: Connection, conversation_id: str, *, at: datetime, preview: str, message_position: int, position: int
) -> None:
    _RECORD_LAST_MESSAGE.run(
        conn,
        conversation_id=conversation_id,
        at=at,
        preview=preview,
        message_position=message_position,
        new_position=position,
    )


def touch(conn: Connection, conversation_id: str, *, position: int) -> None:
    conn.execute(update(conversations).where(conversations.c.id == conversation_id).values(position=position))


def unread_counts(conn: Connection, user_id: str, conversation_ids: list[str]) -> dict[str, int]:
    """Messages after the user's read position that the user did not send, per conversation."""
    if not conversation_ids:
        return {}
    read_upto = func.coalesce(read_status.c.last_read_position, 0)
    query = (
        select(messages.c.conversation_id, func.count())
        .select_from(
            messages.outerjoin(
                read_status,
                (read_status.c.conversation_id == messages.c.conversation_id) & (read_status.c.user_id == user_id),
            )
        )
        .where(
            messages.c.conversation_id.in_(conversation_ids),
            messages.c.sender_id != user_id,
            messages.c.position > read_upto,
        )
        .group_by(messages.c.conversation_id)
    )
    return {cid: int(n) for cid, n in conn.execute(query)}
