"""The live feed: an org's changes read once, then shown to each recipient as they may see them.

A server process that holds sockets for an org reads that org's new changes *once* per notice
(`Feed.read`, every table of the org after a position, no viewer filter), then for each local
connection asks the visibility policy whether it may see each change (`FeedItem.visible_to`) and
sends the frame rendered for its role (`FeedItem.frame_for`). Frames differ between admins and
medics only (a medic sees admins as "Admin" and their direct conversation as "Admin"), so each
change is serialised at most twice however many sockets receive it; never a query per socket.

Live `conversation.updated` frames carry `unread_count` and `last_read_position` as null:
they are per viewer, and computing them per recipient would be a query per socket. Clients
derive them from the stream (`message.created`, their own `read_status.updated`); REST and
pull sync (also used for replay on reconnect) fill them in.

Frames have the shape of a sync change plus its cursor: `{"type", "position", "cursor", "data"}`.

**Local hand-off.** A change written by this process need not be read back: the service that
committed it hands the same `FeedItem`s it would read (`message_sent`, `read_moved`) to the
`LocalFanOut` (the hub), which fans them out at once when they directly follow what it has
fanned out, and otherwise falls back to reading the database. The bus notice is still
published for the other processes; the database stays the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from sitecomms.protocol.cursors import Cursor
from sitecomms.protocol.enums import ChangeType, MessageStatus
from sitecomms.protocol.models import Change, ChangeFrame
from sitecomms.server.services import views, visibility
from sitecomms.server.services.sync import read_window
from sitecomms.server.services.visibility import Viewer
from sitecomms.store.database import Connection, Database, one_read
from sitecomms.store.rows import ConversationRow, MessageRow, ReadStatusRow, UserRow
from sitecomms.store.stream import current_position, current_positions

Row = UserRow | ConversationRow | MessageRow | ReadStatusRow


def frame(change_type: ChangeType, position: int, org_id: str, data: Any) -> str:
    """The realtime frame of one change: a `protocol.models.ChangeFrame`, as JSON text."""
    change = ChangeFrame(type=change_type, position=position, cursor=str(Cursor(position, org_id)), data=data)
    return orjson.dumps(change, option=orjson.OPT_UTC_Z).decode()


def change_frame(change: Change, org_id: str) -> str:
    """A pull-sync change as a realtime frame (used to replay from the database)."""
    return frame(change.type, change.position, org_id, change.data)


@dataclass(slots=True)
class FeedItem:
    position: int
    type: ChangeType
    org_id: str
    row: Row
    conversation: ConversationRow | None  # the conversation of a message or read status; a conversation itself
    _frames: dict[bool, str] = field(default_factory=dict)
    renders: dict[object, Any] = field(default_factory=dict)  # other protocols' renderings, by their key

    def visible_to(self, viewer: Viewer) -> bool:
        if isinstance(self.row, UserRow):
            return visibility.can_see_user(viewer, self.row)
        if self.conversation is None:
            return False
        if isinstance(self.row, ReadStatusRow):
            return visibility.can_see_read_status(viewer, self.conversation, self.row)
        return visibility.can_see_conversation(viewer, self.conversation)

    def medic_audience(self) -> str | None:
        """See `visibility.medic_audience`: every medic, one medic's id, or none."""
        if isinstance(self.row, UserRow):
            return visibility.medic_audience(None, self.row)
        return visibility.medic_audience(self.conversation)

    def frame_for(self, viewer: Viewer) -> str:
        """The frame as this viewer's role sees it (cached per role)."""
        key = viewer.is_admin
        cached = self._frames.get(key)
        if cached is None:
            cached = self._frames[key] = frame(self.type, self.position, self.org_id, self._view(viewer))
        return cached

    def _view(self, viewer: Viewer) -> Any:
        row = self.row
        if isinstance(row, MessageRow):
            return views.message_view(viewer, row, MessageStatus.SENT)
        if isinstance(row, ConversationRow):
            return views.conversation_view(viewer, row, unread_count=None, last_read_position=None)
        if isinstance(row, ReadStatusRow):
            return views.read_status_view(row)
        return views.user_view(row)


@dataclass(frozen=True, slots=True)
class FeedBatch:
    items: list[FeedItem]
    upto: int
    has_more: bool


class LocalFanOut(Protocol):
    """This process's fan-out, told directly of the changes its own writes just committed."""

    def committed(self, org_id: str, items: list[FeedItem]) -> None:
        """`items` are consecutive positions of the org's stream, committed, in order."""
        ...


def message_sent(message: MessageRow, conversation: ConversationRow) -> list[FeedItem]:
    """The two changes of a send: the message, then its conversation's new preview."""
    return [
        FeedItem(message.position, ChangeType.MESSAGE_CREATED, message.org_id, message, conversation),
        FeedItem(conversation.position, ChangeType.CONVERSATION_UPDATED, message.org_id, conversation, conversation),
    ]


def read_moved(status: ReadStatusRow, conversation: ConversationRow) -> list[FeedItem]:
    return [FeedItem(status.position, ChangeType.READ_STATUS_UPDATED, status.org_id, status, conversation)]


class Feed:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def head(self, org_id: str) -> int:
        return await self._db.read("feed_head", current_position, org_id)

    async def heads(self, org_ids: list[str]) -> dict[str, int]:
        return await self._db.read("feed_heads", current_positions, org_ids)

    async def read(self, org_id: str, after: int, limit: int = 1000) -> FeedBatch:
        return await self._db.read("feed_read", _read_txn, org_id, after, limit)


@one_read  # the stream statement alone (store/changes.py)
def _read_txn(conn: Connection, org_id: str, after: int, limit: int) -> FeedBatch:
    # Every change of the org, whoever may see it: the statement of an admin's pull sync.
    window = read_window(conn, visibility.org_scope(org_id), after=after, limit=limit)
    by_id = {c.id: c for c in window.referenced} | {c.id: c for c in window.conversations}
    items = [FeedItem(u.position, ChangeType.USER_UPDATED, org_id, u, None) for u in window.users]
    items += [FeedItem(c.position, ChangeType.CONVERSATION_UPDATED, org_id, c, c) for c in window.conversations]
    items += [
        FeedItem(m.position, ChangeType.MESSAGE_CREATED, org_id, m, by_id.get(m.conversation_id))
        for m in window.messages
    ]
    items += [
        FeedItem(s.position, ChangeType.READ_STATUS_UPDATED, org_id, s, by_id.get(s.conversation_id))
        for s in window.read_statuses
    ]
    items.sort(key=lambda item: item.position)
    return FeedBatch(items=items, upto=window.upto, has_more=window.has_more)
