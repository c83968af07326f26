"""One client's socket as the hub sees it: who, how far it has been sent, and a bounded queue.

The hub never awaits a socket. It `offer`s frames to the connection's bounded queue; the
socket's session drains it (`next_frame`). A queue that fills up means the client is not
reading fast enough: the connection is asked to close with RESYNC_REQUIRED (the client catches
up through `GET /v1/sync` and reconnects), so a slow client neither delays the others nor
grows memory.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from enum import Enum

import orjson

from sitecomms.protocol.frames import CloseCode, ResyncReason, ServerFrame
from sitecomms.server.services.feed import FeedItem
from sitecomms.server.services.visibility import Viewer

CONTROL = 0  # the position of frames that are not changes (pings, errors): never deduplicated


class ConnectionState(Enum):
    REPLAYING = "replaying"  # sending what the client missed, from the database
    LIVE = "live"  # sending fan-out frames from the queue
    CLOSING = "closing"


def control_frame(frame_type: ServerFrame, **fields: object) -> str:
    return orjson.dumps({"type": frame_type.value, **fields}).decode()


class Connection:
    """A subscriber of the hub. `deliver` turns a visible change into this socket's frame (the
    SiteComms frame here; realtime/supabase.py's channels render Supabase's); `hub_heartbeat`
    says whether the hub pings it and drops it when silent (a protocol with heartbeats of its
    own, Phoenix's, says no and times out its socket itself)."""

    hub_heartbeat = True

    __slots__ = (
        "_waiter",
        "close_code",
        "close_frame",
        "close_reason",
        "closing",
        "expires_at",
        "last_heard",
        "last_pinged",
        "outbox",
        "queue_frames",
        "sent_upto",
        "state",
        "viewer",
    )

    @property
    def socket(self) -> object:
        """The socket this connection is on (counted once against the user's socket cap)."""
        return self

    def __init__(self, viewer: Viewer, *, expires_at: float, queue_frames: int) -> None:
        self.viewer = viewer
        self.expires_at = expires_at  # Unix time the current token expires
        self.state = ConnectionState.REPLAYING
        # A deque and one waiter rather than an asyncio.Queue: ten thousand idle sockets each
        # hold one, and the queue's extra machinery (events, getter and putter deques) is memory.
        self.outbox: deque[tuple[int, str]] = deque()
        self.queue_frames = queue_frames
        self._waiter: asyncio.Future[None] | None = None
        self.sent_upto = 0  # the highest stream position sent on this socket
        now = time.monotonic()
        self.last_heard = now
        self.last_pinged = now
        self.closing = False
        self.close_code = CloseCode.GOING_AWAY
        self.close_reason = ""
        self.close_frame: str | None = None

    def deliver(self, item: FeedItem) -> None:
        """A change this connection's viewer may see (the hub asked the visibility policy)."""
        self.offer(item.position, item.frame_for(self.viewer))

    def offer(self, position: int, frame: str) -> None:
        """Queue a frame without waiting; a full queue closes the connection for resync."""
        if self.closing:
            return
        if len(self.outbox) >= self.queue_frames:
            self.resync(ResyncReason.SLOW_CONSUMER)
            return
        self.outbox.append((position, frame))
        self._wake()

    async def next_frame(self) -> tuple[int, str] | None:
        """The next queued frame, waiting for one; None once the connection is closing."""
        while not self.outbox:
            if self.closing:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.closing:
            return None
        return self.outbox.popleft()

    def resync(self, reason: ResyncReason) -> None:
        self.close(CloseCode.RESYNC_REQUIRED, reason.value, control_frame(ServerFrame.RESYNC, reason=reason.value))

    def close(self, code: CloseCode, reason: str, frame: str | None = None) -> None:
        """Ask the socket's session to close (the first request wins)."""
        if self.closing:
            return
        self.state = ConnectionState.CLOSING
        self.close_code, self.close_reason, self.close_frame = code, reason, frame
        self.closing = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
