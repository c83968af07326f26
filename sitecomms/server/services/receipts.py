"""Receipts: who of a message's recipients has read it ("read by 3 of 5", and who).

One read transaction per request: the conversation (the visibility policy decides who may ask:
`visibility.require_receipts_visible`), the message (it must belong to that conversation), the
org's users (the recipients are `visibility.message_recipients`) and the conversation's read
statuses. A recipient has read the message once their read position reaches its position.
To a medic the admins are one team, so a medic's message in their direct conversation has one
recipient, "Admin", read once any admin has read it (the message's `read` status says the same);
a medic never learns how many admins there are or who they are.
The live stream needs nothing of this: admins already receive every read status and every user
change of their org and count locally with the same rule (`web/static/receipts.js`).
"""

from __future__ import annotations

from sitecomms.protocol.enums import Role
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
    readers = [_reader(viewer, user, by_user.get(user.id)) for user in recipients]
    if not viewer.is_admin and any(user.role == Role.ADMIN for user in recipients):
        readers = [_team(readers)]  # admins are one team to a medic (and their roster stays unknown)
    read = sorted((r for r in readers if r.last_read_position >= message.position), key=_by_name)
    unread = sorted((r for r in readers if r.last_read_position < message.position), key=_by_name)
    return ReceiptsView(
        message_id=message.id,
        conversation_id=message.conversation_id,
        position=message.position,
        recipient_count=len(readers),
        read_count=len(read),
        read=read,
        unread=unread,
    )


def _reader(viewer: Viewer, user: UserRow, status: ReadStatusRow | None) -> ReaderView:
    return ReaderView(
        user_id=user.id,
        display_name=visibility.sender_name(viewer, user.role, user.display_name),
        last_read_position=0 if status is None else status.last_read_position,
        last_read_at=None if status is None else status.last_read_at,
    )


def _team(admins: list[ReaderView]) -> ReaderView:
    """The admins as one reader, as far as the one who read furthest."""
    furthest = max(admins, key=lambda r: (r.last_read_position, r.last_read_at is not None, r.last_read_at))
    return ReaderView(
        user_id=None,
        display_name=visibility.ADMIN_TEAM_NAME,
        last_read_position=furthest.last_read_position,
        last_read_at=furthest.last_read_at,
    )


def _by_name(reader: ReaderView) -> tuple[str, str]:
    return reader.display_name.casefold(), reader.user_id or ""
