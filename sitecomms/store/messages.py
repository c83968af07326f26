"""Messages: inserted once, never edited; read by thread page, by stream range or newest-N.

The send (`record_send`) takes two stream positions, inserts the message at the first and
moves its conversation's preview to the second, and returns both rows as written (RETURNING;
the names the rows carry come from the sender and conversation rows the caller read). The two
writes are built once from the first position as an expression (`_send_writes`): a parameter
on SQLite, where the position is taken by its own statement first; on PostgreSQL the `stream.TAKE`
update itself, so position, message and preview are one data-modifying CTE and the org's stream
row lock is held for one round trip and the COMMIT.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Insert,
    Select,
    String,
    Update,
    bindparam,
    func,
    insert,
    select,
    true,
    update,
)

from sitecomms.store import stream
from sitecomms.store import users as user_rows
from sitecomms.store.conversations import ROW_SELECT as CONVERSATION_SELECT
from sitecomms.store.conversations import scope_clause
from sitecomms.store.rows import ConversationRow, MessageRow, UserRow
from sitecomms.store.schema import conversations, messages, users
from sitecomms.store.scopes import Scope, changed_after
from sitecomms.store.statements import Connection, Statement

SEND_POSITIONS = 2  # the message's, then its conversation's new preview

# The columns of a MessageRow, in its field order; the sender's name and role from their user row.
_JOINED = {"sender_name": users.c.display_name, "sender_role": users.c.role}
_ROW_SELECT = select(
    *[_JOINED[name].label(name) if name in _JOINED else messages.c[name] for name in MessageRow.__dataclass_fields__]
).select_from(messages.join(users, users.c.id == messages.c.sender_id))


def _named(name: str) -> ColumnElement[str]:
    return bindparam(name, type_=String()).label(name)


def _send_writes(first: ColumnElement[int]) -> tuple[Insert, Update]:
    """The send's two writes, given the first of its positions, each returning its row.

    (Parameters are not named after columns: SQLAlchemy reserves those names in VALUES/SET.)"""
    message = (
        insert(messages)
        .values(
            id=bindparam("message_id"),
            org_id=bindparam("org"),
            conversation_id=bindparam("conversation"),
            sender_id=bindparam("sender"),
            content=bindparam("text"),
            idempotency_key=bindparam("key"),
            created_at=bindparam("now"),
            position=first,
        )
        .returning(*[_named(n) if n in _JOINED else messages.c[n] for n in MessageRow.__dataclass_fields__])
    )
    preview = (
        update(conversations)
        .where(conversations.c.id == bindparam("conversation"))
        .values(
            last_message_at=bindparam("now"),
            last_message_preview=bindparam("preview"),
            last_message_position=first,
            position=first + 1,
        )
        .returning(
            *[_named(n) if n == "medic_name" else conversations.c[n] for n in ConversationRow.__dataclass_fields__]
        )
    )
    return message, preview


_message_write, _preview_write = _send_writes(bindparam("first", type_=BigInteger()))
_SEND_MESSAGE = Statement("messages.send.message", _message_write)
_SEND_PREVIEW = Statement("messages.send.preview", _preview_write)
_taken = stream.TAKE.cte("taken")
_message_cte, _preview_cte = (
    write.cte(name)
    for write, name in zip(_send_writes(select(_taken.c.first).scalar_subquery()), ("message", "preview"), strict=True)
)
_SEND_POSTGRES = Statement(
    "messages.send.postgresql",
    select(*_message_cte.c, *_preview_cte.c).select_from(
        _message_cte.join(_preview_cte, _preview_cte.c.id == _message_cte.c.conversation_id)
    ),
    dialects=("postgresql",),
)
_MESSAGE_WIDTH = len(MessageRow.__dataclass_fields__)

_BY_ID = Statement("messages.by_id", _ROW_SELECT.where(messages.c.id == bindparam("message_id")))
_by_key = _ROW_SELECT.where(
    messages.c.sender_id == bindparam("sender_id"), messages.c.idempotency_key == bindparam("key")
)
_BY_KEY = Statement("messages.by_key", _by_key)
# What a send reads before it writes, in one query: the sender, the conversation named and an
# earlier message of the sender's with the same idempotency key (each column NULL when absent;
# no row at all when the sender does not exist).
_sender = select(*user_rows.COLUMNS).where(users.c.id == bindparam("sender_id")).subquery("sender")
_target = CONVERSATION_SELECT.where(conversations.c.id == bindparam("conversation_id")).subquery("target")
_earlier = _by_key.subquery("earlier")
_SEND_CONTEXT = Statement(
    "messages.send_context",
    select(*_sender.c, *_target.c, *_earlier.c).select_from(
        _sender.outerjoin(_target, true()).outerjoin(_earlier, true())
    ),
)
_USER_WIDTH, _CONVERSATION_WIDTH = len(UserRow.__dataclass_fields__), len(ConversationRow.__dataclass_fields__)
_NO_BOUND = 2**63 - 1  # `before` of a thread page that starts at the newest message
_THREAD = Statement(
    "messages.thread",
    _ROW_SELECT.where(
        messages.c.conversation_id == bindparam("conversation_id"), messages.c.position < bindparam("before")
    )
    .order_by(messages.c.position.desc())
    .limit(bindparam("limit")),
)
_LATEST_IN = Statement(
    "messages.latest_in",
    select(func.max(messages.c.position)).where(messages.c.conversation_id == bindparam("conversation_id")),
)
_ranked = (
    select(
        messages.c.id,
        func.row_number()
        .over(partition_by=messages.c.conversation_id, order_by=messages.c.position.desc())
        .label("rank"),
    )
    .where(messages.c.conversation_id.in_(bindparam("ids", expanding=True)))
    .subquery()
)
_NEWEST = Statement(
    "messages.newest_per_conversation",
    _ROW_SELECT.where(messages.c.id.in_(select(_ranked.c.id).where(_ranked.c.rank <= bindparam("per")))).order_by(
        messages.c.position
    ),
)


def _scoped(medic: bool) -> Select[tuple[object, ...]]:
    """The messages a scope may see: the org's, or those in the conversations a medic's scope sees."""
    query = _ROW_SELECT.where(messages.c.org_id == bindparam("org_id"))
    if medic:
        query = query.where(messages.c.conversation_id.in_(select(conversations.c.id).where(scope_clause(True))))
    return query


# Per scope shape, [whole org, medic].
CHANGED = changed_after("messages", _scoped, messages.c.position)


def record_send(
    conn: Connection,
    *,
    message_id: str,
    sender: UserRow,
    conversation: ConversationRow,
    content: str,
    idempotency_key: str,
    now: datetime,
    preview: str,
) -> tuple[MessageRow, ConversationRow]:
    """The message as inserted and its conversation as the send left it (see the module doc).

    A duplicate idempotency key raises the driver's integrity error (the store's `Duplicate`
    at the transaction's edge)."""
    params = dict(
        message_id=message_id,
        org=conversation.org_id,
        conversation=conversation.id,
        sender=sender.id,
        sender_name=sender.display_name,
        sender_role=sender.role,
        medic_name=conversation.medic_name,
        text=content,
        key=idempotency_key,
        now=now,
        preview=preview,
        count=SEND_POSITIONS,
    )
    if conn.dialect.name == "postgresql":
        row = _SEND_POSTGRES.first(conn, **params)
        assert row is not None
        written, moved = row[:_MESSAGE_WIDTH], row[_MESSAGE_WIDTH:]
    else:
        first = stream.next_position(conn, conversation.org_id, SEND_POSITIONS)
        inserted, updated = (
            _SEND_MESSAGE.first(conn, first=first, **params),
            _SEND_PREVIEW.first(conn, first=first, **params),
        )
        assert inserted is not None and updated is not None
        written, moved = inserted, updated
    return MessageRow(*written), ConversationRow(*moved)


class SendContext(NamedTuple):
    sender: UserRow | None
    conversation: ConversationRow | None
    earlier: MessageRow | None  # the sender's message with this idempotency key, if any


def send_context(conn: Connection, sender_id: str, conversation_id: str, key: str) -> SendContext:
    """The sender, the conversation and the earlier message with `key`, in one round trip."""
    row = _SEND_CONTEXT.first(conn, sender_id=sender_id, conversation_id=conversation_id, key=key)
    if row is None:
        return SendContext(None, None, None)
    user, conversation = row[:_USER_WIDTH], row[_USER_WIDTH : _USER_WIDTH + _CONVERSATION_WIDTH]
    earlier = row[_USER_WIDTH + _CONVERSATION_WIDTH :]
    return SendContext(
        UserRow(*user),
        None if conversation[0] is None else ConversationRow(*conversation),
        None if earlier[0] is None else MessageRow(*earlier),
    )


def get_message(conn: Connection, message_id: str) -> MessageRow | None:
    row = _BY_ID.first(conn, message_id=message_id)
    return None if row is None else MessageRow(*row)


def get_by_idempotency_key(conn: Connection, sender_id: str, key: str) -> MessageRow | None:
    row = _BY_KEY.first(conn, sender_id=sender_id, key=key)
    return None if row is None else MessageRow(*row)


def thread_page(
    conn: Connection, conversation_id: str, *, before: int | None, limit: int
) -> tuple[list[MessageRow], bool]:
    """Up to `limit` messages before a position (exclusive), oldest first, and whether more exist."""
    bound = _NO_BOUND if before is None else before
    rows = [MessageRow(*r) for r in _THREAD.rows(conn, conversation_id=conversation_id, before=bound, limit=limit + 1)]
    has_more = len(rows) > limit
    return list(reversed(rows[:limit])), has_more


def messages_changed_since(conn: Connection, scope: Scope, *, after: int, limit: int) -> list[MessageRow]:
    statement = CHANGED[scope.shape]
    rows = statement.rows(conn, org_id=scope.org_id, medic_id=scope.medic_id, after=after, limit=limit)
    return [MessageRow(*row) for row in rows]


def newest_per_conversation(conn: Connection, conversation_ids: list[str], per: int) -> list[MessageRow]:
    """The newest `per` messages of each conversation, in position order."""
    if not conversation_ids:
        return []
    return [MessageRow(*row) for row in _NEWEST.rows(conn, ids=conversation_ids, per=per)]


def latest_position_in(conn: Connection, conversation_id: str) -> int:
    return int(_LATEST_IN.scalar(conn, conversation_id=conversation_id) or 0)
