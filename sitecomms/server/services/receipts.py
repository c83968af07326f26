"""Receipts: who of a message's recipients has read it ("read by 3 of 5", and who).

One read transaction per request: the conversation (the visibility policy decides who may ask:
`visibility.require_receipts_visible`), the message (it must belong to that conversation), the
org's users (the recipients are `visibility.message_recipients`) and the conversation's read
statuses. A recipient has read the message once their read position reaches its position.
The live stream needs nothing of this: admins already receive every read status and every user
change of their org and count locally with the same rule (`web/static/receipts.js`).
"""

from __future__ import annotations

from sitecomms.protocol.models import ReaderView, ReceiptsView
from sitecomms.server.services import visibility
from sitecomms.server.services.errors import NotFound
from sitecomms.server.services.visibility import Viewer
from sitecomms.store import conversations, messages, reads, users
from sitecomms.store.database import Connection
from sitecomms.store.rows import MessageRow, ReadStatusRow, UserRow


def receipts_txn(conn: Connection, viewer: Viewer, conversation_id: str, message_id: str) -> ReceiptsView:
    conversation = visibility.require_receipts_visible(viewer, conversations.get_conversation(conn, conversation_id))
    message = messages.get_message(conn, message_id)
    if message is None or message.conversation_id != conversation.id:
        raise NotFound("message not found")
    org_users = users.list_users(conn, visibility.org_scope(conversation.org_id))
    recipients = visibility.message_recipients(conversation, message.sender_id, org_users)
    return receipts_view(viewer, message, recipients, reads.read_statuses_of(conn, conversation.id))


def receipts_view(
    viewer: Viewer, message: MessageRow, recipients: list[UserRow], statuses: list[ReadStatusRow]
) -> ReceiptsView:
    by_user = {s.user_id: s for s in statuses if s.conversation_id == message.conversation_id}
    read: list[ReaderView] = []
    unread: list[ReaderView] = []
    for user in recipients:
        status = by_user.get(user.id)
        reader = ReaderView(
            user_id=user.id,
            display_name=visibility.sender_name(viewer, user.role, user.display_name),
            last_read_position=0 if status is None else status.last_read_position,
            last_read_at=None if status is None else status.last_read_at,
        )
        (read if reader.last_read_position >= message.position else unread).append(reader)
    for readers in (read, unread):
        readers.sort(key=lambda r: (r.display_name.casefold(), r.user_id))
    return ReceiptsView(
        message_id=message.id,
        conversation_id=message.conversation_id,
        position=message.position,
        recipient_count=len(recipients),
        read_count=len(read),
        read=read,
        unread=unread,
    )
