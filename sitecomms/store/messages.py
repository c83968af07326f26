"""Messages: inserted once, never edited; read by thread page, by stream range or newest-N."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Connection, bindparam, func, insert, select, text

from sitecomms.store.conversations import record_last_message
from sitecomms.store.prepared import Prepared
from sitecomms.store.rows import MessageRow, build
from sitecomms.store.schema import conversations, messages, users
from sitecomms.store.stream import next_position
from sitecomms.store.types import UTCDateTime

# The columns of a MessageRow, in its field order (rows build positionally or by name).
_JOINED = {"sender_name": users.c.display_name, "sender_role": users.c.role}
_ROW_SELECT = select(
    *[_JOINED[name].label(name) if name in _JOINED else messages.c[name] for name in MessageRow.__dataclass_fields__]
).select_from(messages.join(users, users.c.id == messages.c.sender_id))


_BY_KEY = Prepared(
    _ROW_SELECT.where(messages.c.sender_id == bindparam("sender_id"), messages.c.idempotency_key == bindparam("key"))
)
_CHANGED_IN_ORG = Prepared(
    _ROW_SELECT.where(messages.c.org_id == bindparam("org"), messages.c.position > bindparam("after"))
    .order_by(messages.c.position)
    .limit(bindparam("limit"))
)
_INSERT = Prepared(insert(messages).values({column: bindparam(column.name) for column in messages.c}))


# PostgreSQL: the position, the message and the conversation's preview in one statement, so the
# org's stream row lock (taken by `p`, which the other two need first) is held for this one
# round trip and the COMMIT. VALUES (not SELECT) lets the parameters take the columns' types.
_RECORD_SEND_POSTGRES = text("""
WITH p AS (
    UPDATE org_streams SET position = position + 2 WHERE org_id = :org_id RETURNING position - 1 AS pos
), m AS (
    INSERT INTO messages (id, org_id, conversation_id, sender_id, content, idempotency_key, created_at, position)
    VALUES (:id, :org_id, :conversation_id, :sender_id, :content, :idempotency_key, :created_at, (SELECT pos FROM p))
), c AS (
    UPDATE conversations
    SET last_message_at = :created_at, last_message_preview = :preview,
        last_message_position = (SELECT pos FROM p), position = (SELECT pos FROM p) + 1
    WHERE id = :conversation_id
)
SELECT pos FROM p
""").bindparams(bindparam("created_at", type_=UTCDateTime()))


def record_send(
    conn: Connection,
    *,
    message_id: str,
    org_id: str,
    conversation_id: str,
    sender_id: str,
    content: str,
    idempotency_key: str,
    now: datetime,
    preview: str,
) -> int:
    """Take two stream positions, insert the message at the first, move its conversation's
    preview to the second; returns the message's position. A duplicate key raises IntegrityError."""
    if conn.dialect.name == "postgresql":
        position = conn.execute(
            _RECORD_SEND_POSTGRES,
            dict(
                id=message_id,
                org_id=org_id,
                conversation_id=conversation_id,
                sender_id=sender_id,
                content=content,
                idempotency_key=idempotency_key,
                created_at=now,
                preview=preview,
            ),
        ).scalar_one()
        return int(position)
    position = next_position(conn, org_id, 2)
    _INSERT.run(
        conn,
        id=message_id,
        org_id=org_id,
        conversation_id=conversation_id,
        sender_id=sender_id,
        content=content,
        idempotency_key=idempotency_key,
        created_at=now,
        position=position,
    )
    record_last_message(
        conn, conversation_id, at=now, preview=preview, message_position=position, position=position + 1
    )
    return position


def get_message(conn: Connection, message_id: str) -> MessageRow | None:
    row = conn.execute(_ROW_SELECT.where(messages.c.id == message_id)).mappings().first()
    return None if row is None else build(MessageRow, row)


def get_by_idempotency_key(conn: Connection, sender_id: str, key: str) -> MessageRow | None:
    row = _BY_KEY.first(conn, sender_id=sender_id, key=key)
    return None if row is None else MessageRow(*row)


def thread_page(
    conn: Connection, conversation_id: str, *, before: int | None, limit: int
) -> tuple[list[MessageRow], bool]:
    """Up to `limit` messages before a position (exclusive), oldest first, and whether more exist."""
    query = _ROW_SELECT.where(messages.c.conversation_id == conversation_id)
    if before is not None:
        query = query.where(messages.c.position < before)
    query = query.order_by(messages.c.position.desc()).limit(limit + 1)
    rows = [build(MessageRow, r) for r in conn.execute(query).mappings()]
    has_more = len(rows) > limit
    return list(reversed(rows[:limit])), has_more


def messages_changed_since(
    conn: Connection, visible: ColumnElement[bool], *, after: int, limit: int
) -> list[MessageRow]:
    visible_ids = select(conversations.c.id).where(visible)
    query = (
        _ROW_SELECT.where(messages.c.conversation_id.in_(visible_ids), messages.c.position > after)
        .order_by(messages.c.position)
        .limit(limit)
    )
    return [build(MessageRow, r) for r in conn.execute(query).mappings()]


def messages_changed_in_org(conn: Connection, org_id: str, *, after: int, limit: int) -> list[MessageRow]:
    """Every message of the org after `after`: the server's own read, not any viewer's."""
    return [MessageRow(*row) for row in _CHANGED_IN_ORG.rows(conn, org=org_id, after=after, limit=limit)]


def newest_per_conversation(conn: Connection, conversation_ids: list[str], per: int) -> list[MessageRow]:
    """The newest `per` messages of each conversation, in position order."""
    if not conversation_ids:
        return []
    ranked = (
        select(
            messages.c.id,
            func.row_number()
            .over(partition_by=messages.c.conversation_id, order_by=messages.c.position.desc())
            .label("rank"),
        )
        .where(messages.c.conversation_id.in_(conversation_ids))
        .subquery()
    )
    query = _ROW_SELECT.where(messages.c.id.in_(select(ranked.c.id).where(ranked.c.rank <= per))).order_by(
        messages.c.position
    )
    return [build(MessageRow, r) for r in conn.execute(query).mappings()]


def latest_position_in(conn: Connection, conversation_id: str) -> int:
    query = select(func.max(messages.c.position)).where(messages.c.conversation_id == conversation_id)
    return int(conn.execute(query).scalar_one_or_none() or 0)
