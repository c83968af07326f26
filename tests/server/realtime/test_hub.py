"""The org reader's local hand-off: this process's own commits are fanned out without a read when
they directly follow what was fanned out; anything else is read from the feed, and nothing is
offered twice or out of order (see `OrgReader.committed`).

The feed here is a stand-in holding the org's changes in memory, so a test can decide exactly
what a read returns and when it returns it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime

from sitecomms.bus import Notice
from sitecomms.protocol.enums import ConversationType, Role
from sitecomms.server.realtime.connection import Connection
from sitecomms.server.realtime.hub import Hub
from sitecomms.server.services.feed import Feed, FeedBatch, FeedItem, message_sent
from sitecomms.server.services.visibility import Viewer
from sitecomms.store.rows import ConversationRow, MessageRow

TIMEOUT = 10.0
ORG = "org-1"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ADMIN = Viewer("admin-1", ORG, Role.ADMIN)
MEDIC = Viewer("medic-1", ORG, Role.MEDIC)
NEIGHBOUR = Viewer("medic-2", ORG, Role.MEDIC)
DIRECT = ConversationRow("c-1", ORG, ConversationType.DIRECT.value, MEDIC.user_id, "M", None, None, None, NOW, 0)


def send(position: int) -> list[FeedItem]:
    """A send at `position` (the message) and `position + 1` (its conversation)."""
    message = MessageRow(
        f"m-{position}", ORG, DIRECT.id, ADMIN.user_id, "A", "admin", "hi", f"k-{position}", NOW, position
    )
    return message_sent(message, dataclasses.replace(DIRECT, position=position + 1, last_message_position=position))


class StubFeed(Feed):
    """The org's changes in memory; `gate` (when set) holds reads until the test opens it."""

    def __init__(self, head: int) -> None:
        self.items: list[FeedItem] = []
        self.head_position = head
        self.reads: list[int] = []
        self.read_started = asyncio.Event()
        self.read_done = asyncio.Event()
        self.gate: asyncio.Event | None = None

    async def head(self, org_id: str) -> int:
        return self.head_position

    async def read(self, org_id: str, after: int, limit: int = 1000) -> FeedBatch:
        self.reads.append(after)
        self.read_started.set()
        if self.gate is not None:
            await self.gate.wait()
        items = [item for item in self.items if item.position > after][:limit]
        upto = items[-1].position if items else max(after, self.head_position)
        self.read_done.set()
        return FeedBatch(items=items, upto=upto, has_more=False)

    def commit(self, items: list[FeedItem]) -> list[FeedItem]:
        self.items += items
        self.head_position = items[-1].position
        return items


def connection(viewer: Viewer) -> Connection:
    return Connection(viewer, expires_at=time.time() + 3600, queue_frames=100)


async def offered(conn: Connection, count: int) -> list[int]:
    """The positions of the next `count` frames offered to the socket, waiting for each."""
    positions = []
    for _ in range(count):
        item = await asyncio.wait_for(conn.next_frame(), TIMEOUT)
        assert item is not None
        positions.append(item[0])
    return positions


async def joined(feed: StubFeed, *viewers: Viewer) -> tuple[Hub, list[Connection]]:
    hub = Hub(feed, heartbeat_seconds=60, idle_timeout_seconds=120)
    conns = [connection(v) for v in viewers]
    for conn in conns:
        await asyncio.wait_for(hub.join(conn), TIMEOUT)
    return hub, conns


async def test_a_commit_that_follows_on_is_fanned_out_without_a_read() -> None:
    feed = StubFeed(head=10)
    hub, (admin, medic, neighbour) = await joined(feed, ADMIN, MEDIC, NEIGHBOUR)
    try:
        hub.committed(ORG, feed.commit(send(11)))
        hub.committed(ORG, feed.commit(send(13)))
        assert await offered(admin, 4) == [11, 12, 13, 14]
        assert await offered(medic, 4) == [11, 12, 13, 14]
        assert list(neighbour.outbox) == [], "another medic's conversation"
        assert feed.reads == []
    finally:
        await asyncio.wait_for(hub.close(), TIMEOUT)


async def test_a_commit_after_a_gap_is_read_from_the_feed_with_what_it_skipped() -> None:
    feed = StubFeed(head=10)
    hub, (admin,) = await joined(feed, ADMIN)
    try:
        feed.commit(send(11))  # committed elsewhere: only the bus would say so
        hub.committed(ORG, feed.commit(send(13)))
        assert await offered(admin, 4) == [11, 12, 13, 14]
        assert feed.reads == [10]
        hub.committed(ORG, feed.commit(send(15)))  # follows on again: no second read
        assert await offered(admin, 2) == [15, 16]
        assert feed.reads == [10]
    finally:
        await asyncio.wait_for(hub.close(), TIMEOUT)


async def test_a_notice_for_a_local_commit_causes_no_read() -> None:
    feed = StubFeed(head=10)
    hub, (admin,) = await joined(feed, ADMIN)
    try:
        hub.committed(ORG, feed.commit(send(11)))
        hub.on_notice(Notice(ORG, 12))  # the bus echoes this process's own notice
        assert await offered(admin, 2) == [11, 12]
        assert feed.reads == []
        hub.on_notice(Notice(ORG, 14))  # announced before its commit is visible here (a lagging replica)
        await asyncio.wait_for(feed.read_done.wait(), TIMEOUT)
        assert feed.reads == [12]
        assert list(admin.outbox) == []
        feed.commit(send(13))
        hub.on_notice(Notice(ORG, 14))  # the same notice again still reads
        assert await offered(admin, 2) == [13, 14]
        assert feed.reads == [12, 12]
    finally:
        await asyncio.wait_for(hub.close(), TIMEOUT)


async def test_commits_handed_over_during_a_read_are_neither_lost_nor_offered_twice() -> None:
    feed = StubFeed(head=10)
    hub, (admin,) = await joined(feed, ADMIN)
    try:
        feed.gate = asyncio.Event()
        feed.commit(send(11))  # from elsewhere
        hub.on_reset()  # a read from 10 starts, and waits at the gate
        await asyncio.wait_for(feed.read_started.wait(), TIMEOUT)
        hub.committed(ORG, feed.commit(send(13)))  # does not follow 10: left to a read
        hub.committed(ORG, feed.commit(send(15)))
        feed.gate.set()
        assert await offered(admin, 6) == [11, 12, 13, 14, 15, 16]
        hub.committed(ORG, feed.commit(send(17)))  # nothing repeated before this one
        assert await offered(admin, 2) == [17, 18]
    finally:
        await asyncio.wait_for(hub.close(), TIMEOUT)


async def test_a_read_overlapping_queued_local_commits_offers_each_once() -> None:
    feed = StubFeed(head=10)
    hub, (admin,) = await joined(feed, ADMIN)
    try:
        feed.gate = asyncio.Event()
        hub.on_reset()
        await asyncio.wait_for(feed.read_started.wait(), TIMEOUT)
        hub.committed(ORG, feed.commit(send(11)))  # follows 10: queued while the read waits
        feed.commit(send(13))  # from elsewhere
        feed.gate.set()
        assert await offered(admin, 4) == [11, 12, 13, 14]
        hub.committed(ORG, feed.commit(send(15)))
        assert await offered(admin, 2) == [15, 16], "the read's 11 and 12 were offered once"
    finally:
        await asyncio.wait_for(hub.close(), TIMEOUT)
