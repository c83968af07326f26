"""One client's socket as the hub sees it: who, how far it has been sent, and a bounded queue.

The hub never awaits a socket. It `offer`s frames to the connection's bounded queue; one sender
task per socket drains it. A queue that fills up means the client is not reading fast enough:
the connection is asked to close with RESYNC_REQUIRED (the client catches up through
`GET /v1/sync` and reconnects), so a slow client neither delays the others nor grows memory.
"""

from __future__ import annotations

import asyncio
import time
from enum import Enum

import orjson

from sitecomms.protocol.frames import CloseCode, ResyncReason, ServerFrame
from sitecomms.server.services.visibility import Viewer

CONTROL = 0  # the position of frames that are not changes (pings, errors): never deduplicated


class ConnectionState(Enum):
    REPLAYING = "replaying"  # sending what the client missed, from the database
    LIVE = "live"  # sending fan-out frames from the queue
    CLOSING = "closing"


def control_frame(frame_type: ServerFrame, **fields: object) -> str:
    return orjson.dumps({"type": frame_type.value, **fields}).decode()


class Connection:
    __slots__ = (
        "close_code",
        "close_frame",
        "close_reason",
        "closing",
        "expires_at",
        "last_heard",
        "last_pinged",
        "queue",
        "sent_upto",
        "state",
        "viewer",
    )

    def __init__(self, viewer: Viewer, *, expires_at: float, queue_frames: int) -> None:
        self.viewer = viewer
        self.expires_at = expires_at  # Unix time the current token expires
        self.state = ConnectionState.REPLAYING
        self.queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue(queue_frames)
        self.sent_upto = 0  # the highest stream position sent on this socket
        now = time.monotonic()
        self.last_heard = now
        self.last_pinged = now
        self.closing = asyncio.Event()
        self.close_code = CloseCode.GOING_AWAY
        self.close_reason = ""
        self.close_frame: str | None = None

    def offer(self, position: int, frame: str) -> None:
        """Queue a frame without waiting; a full queue closes the connection for resync."""
        if self.closing.is_set():
            return
        try:
            self.queue.put_nowait((position, frame))
        except asyncio.QueueFull:
            self.resync(ResyncReason.SLOW_CONSUMER)

    def resync(self, reason: ResyncReason) -> None:
        self.close(CloseCode.RESYNC_REQUIRED, reason.value, control_frame(ServerFrame.RESYNC, reason=reason.value))

    def close(self, code: CloseCode, reason: str, frame: str | None = None) -> None:
        """Ask the socket's session to close (the first request wins)."""
        if self.closing.is_set():
            return
        self.state = ConnectionState.CLOSING
        self.close_code, self.close_reason, self.close_frame = code, reason, frame
        self.closing.set()
