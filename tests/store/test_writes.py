"""The store's writes return the rows as written: what RETURNING gives is what a read finds after.

The send's rows go straight to the live feed (the local hand-off), so they must be exactly the
rows a later read of the database returns, names and positions included, on both engines.
"""

from __future__ import annotations

import asyncio
import uuid

from sitecomms.store import conversations, messages, reads, stream, users
from sitecomms.store.database import Connection
from sitecomms.store.rows import ConversationRow, MessageRow, ReadStatusRow
from sitecomms.store.types import utcnow
from tests.conftest import Stack

TIMEOUT_SECONDS = 30

Written = tuple[int, MessageRow, ConversationRow, MessageRow | None, ConversationRow | None, int]


def _send(conn: Connection, sender_id: str, conversation_id: str) -> Written:
    sender, conversation = users.get_user(conn, sender_id), conversations.get_conversation(conn, conversation_id)
    assert sender is not None and conversation is not None
    head = stream.current_position(conn, conversation.org_id)
    message, moved = messages.record_send(
        conn,
        message_id=str(uuid.uuid4()),
        sender=sender,
        conversation=conversation,
        content="hello  there",
        idempotency_key=str(uuid.uuid4()),
        now=utcnow(),
        preview="hello there",
    )
    after = stream.current_position(conn, conversation.org_id)
    return (
        head,
        message,
        moved,
        messages.get_message(conn, message.id),
        conversations.get_conversation(conn, moved.id),
        after,
    )


async def test_a_send_returns_the_message_and_conversation_as_stored(stack: Stack) -> None:
    async with asyncio.timeout(TIMEOUT_SECONDS):
        world = await stack.orgs.make(admins=1, medics=1)
        admin, medic = world.admins[0], world.medics[0]
        assert medic.conversation_id is not None
        head, message, moved, stored_message, stored_conversation, after = await stack.db.write(
            "test_send_rows", _send, admin.id, medic.conversation_id
        )
    assert message == stored_message
    assert moved == stored_conversation
    assert (message.position, moved.position, after) == (head + 1, head + 2, head + 2)
    assert (message.sender_name, message.sender_role) == (admin.display_name, "admin")
    assert moved.medic_name == medic.display_name
    assert (moved.last_message_position, moved.last_message_preview) == (message.position, "hello there")
    assert moved.last_message_at == message.created_at and message.created_at.utcoffset() is not None


def _mark(
    conn: Connection, user_id: str, conversation_id: str
) -> tuple[list[ReadStatusRow | None], ReadStatusRow | None]:
    conversation = conversations.get_conversation(conn, conversation_id)
    assert conversation is not None
    written = []
    for target, exists in ((1, False), (2, True), (2, True)):  # first, forward, not forward: None
        position = stream.next_position(conn, conversation.org_id)
        written.append(
            reads.move_read_status(
                conn,
                conversation_id=conversation_id,
                user_id=user_id,
                org_id=conversation.org_id,
                target=target,
                at=utcnow(),
                position=position,
                exists=exists,
            )
        )
    return written, reads.get_read_status(conn, conversation_id, user_id)


async def test_a_read_mark_returns_the_row_as_stored_and_never_moves_back(stack: Stack) -> None:
    async with asyncio.timeout(TIMEOUT_SECONDS):
        world = await stack.orgs.make(admins=1, medics=1)
        written, stored = await stack.db.write("test_read_rows", _mark, world.medics[0].id, world.broadcast_id)
    first, moved, unmoved = written
    assert first is not None and moved is not None and unmoved is None
    assert (first.last_read_position, moved.last_read_position) == (1, 2)
    assert moved == stored
