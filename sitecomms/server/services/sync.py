"""Pull sync: the org stream as one viewer may see it, from a cursor.

Every changeable row carries the stream position of the change that last touched it, and
positions are unique within an org across tables. A page from cursor C reads, in one
snapshot, up to `limit + 1` rows with position > C from each of users, conversations,
messages and read statuses (each filtered by the visibility policy), merges them by
position and keeps the first `limit`. Because every table was read at least as far as the
last kept position, nothing visible at or below it is missed, so `next_cursor` (that
position) is gapless. When nothing more is visible, the cursor jumps to the stream's head,
so a medic's client does not re-scan other conversations' changes next time.

A row changed twice appears once, at its newer position, with its current state: pull sync
returns state, compacted, rather than a replay of every intermediate value.

With no cursor the page is a snapshot (`reset`): every visible conversation, the newest
messages of each, read statuses and names, and a cursor at the stream's head.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace

from sitecomms.protocol.cursors import Cursor
from sitecomms.protocol.enums import ChangeType
from sitecomms.protocol.errors import ErrorCode
from sitecomms.protocol.limits import INITIAL_SYNC_MESSAGES_PER_CONVERSATION
from sitecomms.protocol.models import Change, SyncPage
from sitecomms.server.services import views, visibility
from sitecomms.server.services.errors import Conflict
from sitecomms.server.services.visibility import Viewer
from sitecomms.store import changes, conversations, messages, reads, users
from sitecomms.store.database import Connection, Database
from sitecomms.store.rows import ConversationRow, MessageRow, ReadStatusRow, UserRow
from sitecomms.store.scopes import Scope
from sitecomms.store.stream import current_position


class Sync:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def page(self, viewer: Viewer, cursor: Cursor | None, limit: int) -> SyncPage:
        if cursor is None:
            return await self._db.read("sync_snapshot", _snapshot_txn, viewer)
        return await self._db.read("sync_page", _page_txn, viewer, cursor, limit)


def _snapshot_txn(conn: Connection, viewer: Viewer) -> SyncPage:
    head, changes = snapshot_changes(conn, viewer)
    return SyncPage(changes=changes, next_cursor=str(Cursor(head, viewer.org_id)), has_more=False, reset=True)


def snapshot_changes(conn: Connection, viewer: Viewer) -> tuple[int, list[Change]]:
    """The stream's head and, rendered for the viewer, every visible conversation, the newest
    messages of each, read statuses and users: the snapshot a first sync gets (also the
    WatermelonDB endpoint's, `watermelon.py`)."""
    head = current_position(conn, viewer.org_id)
    scope = visibility.viewer_scope(viewer)
    conv_rows = conversations.list_conversations(conn, scope)
    ids = [c.id for c in conv_rows]
    message_rows = messages.newest_per_conversation(conn, ids, INITIAL_SYNC_MESSAGES_PER_CONVERSATION)
    status_rows = reads.read_statuses_in(conn, scope)
    user_rows = users.list_users(conn, scope)
    return head, render(conn, viewer, user_rows, conv_rows, message_rows, status_rows)


def _page_txn(conn: Connection, viewer: Viewer, cursor: Cursor, limit: int) -> SyncPage:
    window = read_window(conn, visibility.viewer_scope(viewer), after=cursor.position, limit=limit)
    if cursor.position > window.head:
        raise Conflict(
            "this cursor is ahead of the server's stream; sync again without a cursor", ErrorCode.CURSOR_AHEAD
        )
    changes = render(conn, viewer, window.users, window.conversations, window.messages, window.read_statuses)
    return SyncPage(
        changes=changes, next_cursor=str(Cursor(window.upto, viewer.org_id)), has_more=window.has_more, reset=False
    )


@dataclass(frozen=True, slots=True)
class Window:
    """The rows of each table changed in `(after, upto]`, as one scope may see them."""

    users: list[UserRow]
    conversations: list[ConversationRow]
    messages: list[MessageRow]
    read_statuses: list[ReadStatusRow]
    upto: int
    has_more: bool
    head: int  # the stream's head when they were read
    referenced: list[ConversationRow] = field(default_factory=list)  # those messages' and statuses' conversations


def read_window(conn: Connection, scope: Scope, *, after: int, limit: int) -> Window:
    """The first `limit` changes after `after` in position order, split by table (see the module doc);
    `upto` is the stream's head when they are all there is. One statement (`store/changes.py`).

    The same read serves a viewer's pull sync and the live feed's org-wide read (`feed.py`)."""
    found = changes.changes_after(conn, scope, after=after, limit=limit + 1)
    window = window_of(
        found.users, found.conversations, found.messages, found.read_statuses, limit=limit, head=found.head
    )
    return replace(window, referenced=found.referenced)


def window_of(
    user_rows: list[UserRow],
    conv_rows: list[ConversationRow],
    message_rows: list[MessageRow],
    status_rows: list[ReadStatusRow],
    *,
    limit: int,
    head: int,
) -> Window:
    """Merge up to `limit + 1` rows read from each table into the first `limit` changes, gapless."""
    merged = list(
        heapq.merge(*([r.position for r in rows] for rows in (user_rows, conv_rows, message_rows, status_rows)))
    )
    has_more = len(merged) > limit
    upto = merged[limit - 1] if has_more else head
    return Window(
        users=[r for r in user_rows if r.position <= upto],
        conversations=[r for r in conv_rows if r.position <= upto],
        messages=[r for r in message_rows if r.position <= upto],
        read_statuses=[r for r in status_rows if r.position <= upto],
        upto=upto,
        has_more=has_more,
        head=head,
    )


def render(
    conn: Connection,
    viewer: Viewer,
    user_rows: list[UserRow],
    conv_rows: list[ConversationRow],
    message_rows: list[MessageRow],
    status_rows: list[ReadStatusRow],
) -> list[Change]:
    """Those rows as changes rendered for the viewer (names, unread counts, message statuses),
    in stream order: what a pull sync page carries."""
    conv_ids = [c.id for c in conv_rows]
    unread = conversations.unread_counts(conn, viewer.user_id, conv_ids)
    read_upto = reads.read_positions_of_user(conn, viewer.user_id, conv_ids)
    message_conv_ids = sorted({m.conversation_id for m in message_rows})
    involved = conversations.get_conversations(conn, message_conv_ids)
    visible_statuses: dict[str, list[ReadStatusRow]] = {}
    for status in reads.read_statuses_for(conn, message_conv_ids):
        conversation = involved.get(status.conversation_id)
        if conversation is not None and visibility.can_see_read_status(viewer, conversation, status):
            visible_statuses.setdefault(status.conversation_id, []).append(status)

    changes = [Change(r.position, ChangeType.USER_UPDATED, views.user_view(r)) for r in user_rows]
    changes += [
        Change(
            c.position,
            ChangeType.CONVERSATION_UPDATED,
            views.conversation_view(
                viewer, c, unread_count=unread.get(c.id, 0), last_read_position=read_upto.get(c.id, 0)
            ),
        )
        for c in conv_rows
    ]
    changes += [
        Change(
            m.position,
            ChangeType.MESSAGE_CREATED,
            views.message_view(viewer, m, views.message_status(m, visible_statuses.get(m.conversation_id, []))),
        )
        for m in message_rows
    ]
    changes += [Change(s.position, ChangeType.READ_STATUS_UPDATED, views.read_status_view(s)) for s in status_rows]
    changes.sort(key=lambda change: change.position)
    return changes
