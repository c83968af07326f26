"""Sending messages, conversation lists, threads, read positions and receipts (`receipts.py`).

A send is durable before it is acknowledged, and idempotent: the key a client makes up for a
message is a database constraint (unique per sender), so the same key again returns the same
message, also after a restart and also when retries race. Each send takes two stream
positions in its transaction: one for the message, one for the conversation's new preview.
`send_batch` runs several sends and read marks, each exactly so, in one transaction (the
WatermelonDB push, `watermelon.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from sitecomms.protocol import rules
from sitecomms.protocol.cursors import Cursor
from sitecomms.protocol.enums import ChangeType
from sitecomms.protocol.errors import ErrorCode
from sitecomms.protocol.limits import PREVIEW_CHARS
from sitecomms.protocol.models import ConversationList, MessagePage, MessageView, ReadStatusView, ReceiptsView
from sitecomms.server.services import failpoints, receipts, views, visibility
from sitecomms.server.services.errors import Conflict, ServiceError, Unauthenticated, obey
from sitecomms.server.services.failpoints import Failpoint
from sitecomms.server.services.feed import FeedItem, LocalFanOut, message_sent, read_moved
from sitecomms.server.services.publisher import Publisher
from sitecomms.server.services.visibility import Viewer
from sitecomms.store import conversations, messages, reads, schema
from sitecomms.store.database import Connection, Database, TxnFn, one_change
from sitecomms.store.errors import Duplicate, Unavailable
from sitecomms.store.rows import ConversationRow, MessageRow, ReadStatusRow
from sitecomms.store.stream import next_position
from sitecomms.store.types import utcnow

if TYPE_CHECKING:
    from sitecomms.server.metrics import Metrics

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SendResult:
    message: MessageView
    created: bool


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message of a batch (`Messaging.send_batch`)."""

    conversation_id: str
    content: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Per message of a batch, the message as stored (sent now or earlier with its key) or the
    refusal; per read mark, the read status or the refusal."""

    sent: list[MessageRow | ServiceError]
    read: list[ReadStatusView | ServiceError]


def preview_of(content: str, chars: int = PREVIEW_CHARS) -> str:
    """The text on one line, cut to `chars` with an ellipsis (a conversation's preview, a push's text)."""
    flat = " ".join(content.split())
    return flat if len(flat) <= chars else flat[: chars - 1] + "…"


class Messaging:
    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        local: LocalFanOut | None = None,
        *,
        metrics: Metrics | None = None,
        write_refused: Callable[[BaseException], None] | None = None,
        armed: frozenset[Failpoint] = frozenset(),
    ) -> None:
        self._armed = armed  # failpoints (tests only)
        self._db = db
        self._publisher = publisher
        self._local = local
        self._metrics = metrics
        self._write_refused = write_refused  # readiness (Health.write_refused): told of a refused send

    async def send(self, viewer: Viewer, conversation_id: str, content: str, idempotency_key: str) -> SendResult:
        content = obey(rules.message_content, "content", content)
        idempotency_key = obey(rules.idempotency_key, "idempotency_key", idempotency_key)
        try:
            row, conversation = await self._write_sends(
                "send_message", _send_txn, viewer, conversation_id, content, idempotency_key
            )
        except Duplicate as exc:
            if exc.constraint != schema.UNIQUE_IDEMPOTENCY_KEY:
                raise
            # A concurrent retry with the same key committed first: answer with its message.
            row, conversation = (
                await self._db.read(
                    "send_message_replay", _replay_txn, viewer, conversation_id, content, idempotency_key
                ),
                None,
            )
        if conversation is not None:  # created now, not a retry
            failpoints.reached(self._armed, Failpoint.SEND_COMMITTED)
            if self._metrics is not None:
                self._metrics.messages_sent.inc()
            if self._local is not None:
                self._local.committed(row.org_id, message_sent(row, conversation))
            await self._publisher.publish(row.org_id, conversation.position)  # the message, then its conversation
        return SendResult(views.message_view(viewer, row), conversation is not None)

    async def send_batch(
        self,
        viewer: Viewer,
        outgoing: list[Outgoing],
        read_upto: list[tuple[str, int]],
        check: Callable[[Connection], None] | None = None,
    ) -> BatchResult:
        """Several sends and read marks (conversation id, up to position) in one transaction: each
        exactly as `send` and `mark_read` do it, with one refused item reported in its place
        while the others commit. `check(conn)` runs first in the same transaction and refuses
        the whole batch by raising (the WatermelonDB push's conflict check)."""
        try:
            result, committed = await self._write_sends("send_batch", _batch_txn, viewer, outgoing, read_upto, check)
        except Duplicate as exc:
            if exc.constraint != schema.UNIQUE_IDEMPOTENCY_KEY:
                raise
            # A concurrent retry with one of the keys committed first: run it again, which finds it.
            result, committed = await self._write_sends("send_batch", _batch_txn, viewer, outgoing, read_upto, check)
        if committed:
            if self._metrics is not None:
                self._metrics.messages_sent.inc(sum(1 for item in committed if item.type is ChangeType.MESSAGE_CREATED))
            if self._local is not None:
                self._local.committed(viewer.org_id, committed)
            await self._publisher.publish(viewer.org_id, committed[-1].position)
        return result

    async def _write_sends(self, name: str, fn: TxnFn[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A write that stores messages: a refusal by the database is counted and makes the
        process not ready (readiness is told at once, not at its next probe)."""
        try:
            return await self._db.write(name, fn, *args, **kwargs)
        except Unavailable as exc:
            if self._metrics is not None:
                self._metrics.send_write_failures.inc()
            if self._write_refused is not None:
                self._write_refused(exc)
            raise

    async def conversations(self, viewer: Viewer) -> ConversationList:
        return await self._db.read("list_conversations", _list_txn, viewer)

    async def thread(self, viewer: Viewer, conversation_id: str, before: Cursor | None, limit: int) -> MessagePage:
        return await self._db.read("thread_page", _thread_txn, viewer, conversation_id, before, limit)

    async def mark_read(self, viewer: Viewer, conversation_id: str, up_to: int | None) -> ReadStatusView:
        status, moved = await self._db.write("mark_read", _mark_read_txn, viewer, conversation_id, up_to)
        if moved is not None:
            if self._local is not None:
                self._local.committed(viewer.org_id, read_moved(*moved))
            await self._publisher.publish(viewer.org_id, status.position)
        return status

    async def receipts(self, viewer: Viewer, conversation_id: str, message_id: str) -> ReceiptsView:
        """Who of the message's recipients has read it (see `receipts.py`)."""
        return await self._db.read("message_receipts", receipts.receipts_txn, viewer, conversation_id, message_id)


def _same_message(found: MessageRow | None, conversation_id: str, content: str) -> MessageRow | None:
    """`found` (the sender's message with this key, if any) when it is this message; Conflict if not."""
    if found is not None and (found.conversation_id != conversation_id or found.content != content):
        raise Conflict(
            "this idempotency_key was already used for a different message", ErrorCode.IDEMPOTENCY_KEY_REUSED
        )
    return found


@one_change  # on PostgreSQL: its reads in one statement, then its one change in one (messages.py)
def _send_txn(
    conn: Connection, viewer: Viewer, conversation_id: str, content: str, key: str
) -> tuple[MessageRow, ConversationRow | None]:
    """The message, and its conversation as the send left it (None: the key was used before)."""
    return _send_in(conn, viewer, conversation_id, content, key)


def _send_in(
    conn: Connection, viewer: Viewer, conversation_id: str, content: str, key: str
) -> tuple[MessageRow, ConversationRow | None]:
    """The send inside the caller's write transaction (`_send_txn`, `_batch_txn`)."""
    sender, target, earlier = messages.send_context(conn, viewer.user_id, conversation_id, key)
    if sender is None or sender.org_id != viewer.org_id:  # (then nothing else was found either)
        raise Unauthenticated("the account behind this token no longer exists")
    found = _same_message(earlier, conversation_id, content)
    if found is not None:
        return found, None
    conversation = visibility.require_writable(viewer, target)
    # The org's stream lock is held from here to COMMIT: nothing is read under it, and on
    # PostgreSQL it is one statement. A racing retry with the same key that committed meanwhile
    # makes the insert violate the unique key; `send` then answers with that message.
    return messages.record_send(
        conn,
        message_id=str(uuid.uuid4()),
        sender=sender,
        conversation=conversation,
        content=content,
        idempotency_key=key,
        now=utcnow(),
        preview=preview_of(content),
    )


def _batch_txn(
    conn: Connection,
    viewer: Viewer,
    outgoing: list[Outgoing],
    read_upto: list[tuple[str, int]],
    check: Callable[[Connection], None] | None,
) -> tuple[BatchResult, list[FeedItem]]:
    if check is not None:
        check(conn)  # refuses the whole batch by raising
    sent: list[MessageRow | ServiceError] = []
    read: list[ReadStatusView | ServiceError] = []
    committed: list[FeedItem] = []
    for item in outgoing:
        try:
            content = obey(rules.message_content, "content", item.content)
            key = obey(rules.idempotency_key, "idempotency_key", item.idempotency_key)
            row, conversation = _send_in(conn, viewer, item.conversation_id, content, key)
        except Unauthenticated:
            raise
        except ServiceError as exc:
            sent.append(exc)
            continue
        sent.append(row)
        if conversation is not None:
            committed += message_sent(row, conversation)
    for conversation_id, up_to in read_upto:
        try:
            status, moved = _mark_read_txn(conn, viewer, conversation_id, up_to)
        except ServiceError as exc:
            read.append(exc)
            continue
        read.append(status)
        if moved is not None:
            committed += read_moved(*moved)
    committed.sort(key=lambda feed_item: feed_item.position)
    return BatchResult(sent, read), committed


def _replay_txn(conn: Connection, viewer: Viewer, conversation_id: str, content: str, key: str) -> MessageRow:
    found = _same_message(messages.get_by_idempotency_key(conn, viewer.user_id, key), conversation_id, content)
    if found is None:
        raise Conflict("the message could not be stored; retry with the same idempotency_key")
    return found


def _list_txn(conn: Connection, viewer: Viewer) -> ConversationList:
    rows = conversations.list_conversations(conn, visibility.viewer_scope(viewer))
    ids = [row.id for row in rows]
    unread = conversations.unread_counts(conn, viewer.user_id, ids)
    read_upto = reads.read_positions_of_user(conn, viewer.user_id, ids)
    return ConversationList(
        conversations=[
            views.conversation_view(
                viewer, row, unread_count=unread.get(row.id, 0), last_read_position=read_upto.get(row.id, 0)
            )
            for row in rows
        ]
    )


def _thread_txn(
    conn: Connection, viewer: Viewer, conversation_id: str, before: Cursor | None, limit: int
) -> MessagePage:
    conversation = visibility.require_visible(viewer, conversations.get_conversation(conn, conversation_id))
    rows, has_more = messages.thread_page(
        conn, conversation.id, before=before.position if before else None, limit=limit
    )
    statuses = [
        s
        for s in reads.read_statuses_of(conn, conversation.id)
        if visibility.can_see_read_status(viewer, conversation, s)
    ]
    page = [views.message_view(viewer, row, views.message_status(row, statuses)) for row in rows]
    next_before = str(Cursor(rows[0].position, viewer.org_id)) if rows and has_more else None
    return MessagePage(messages=page, next_before=next_before, has_more=has_more)


def _mark_read_txn(
    conn: Connection, viewer: Viewer, conversation_id: str, up_to: int | None
) -> tuple[ReadStatusView, tuple[ReadStatusRow, ConversationRow] | None]:
    """The read status, and (when it moved) the new row with its conversation."""
    conversation = visibility.require_visible(viewer, conversations.get_conversation(conn, conversation_id))
    latest = messages.latest_position_in(conn, conversation.id)
    target = latest if up_to is None else min(up_to, latest)
    current = reads.get_read_status(conn, conversation.id, viewer.user_id)
    if current is not None and current.last_read_position >= target:
        return views.read_status_view(current), None
    if current is None and target <= 0:
        return ReadStatusView(
            conversation_id=conversation.id,
            user_id=viewer.user_id,
            last_read_position=0,
            last_read_at=None,
            position=0,
        ), None
    position = next_position(conn, conversation.org_id)
    # Under the org's stream lock: another device of this user may have moved it meanwhile.
    current = reads.get_read_status(conn, conversation.id, viewer.user_id)
    if current is not None and current.last_read_position >= target:
        return views.read_status_view(current), None
    row = reads.move_read_status(
        conn,
        conversation_id=conversation.id,
        user_id=viewer.user_id,
        org_id=conversation.org_id,
        target=target,
        at=utcnow(),
        position=position,
        exists=current is not None,
    )
    assert row is not None, "moved under the org's stream lock, after the check above"
    return views.read_status_view(row), (row, conversation)
