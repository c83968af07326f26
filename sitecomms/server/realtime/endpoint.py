"""`GET /v1/realtime`: one socket's session, from hello to close (the protocol: docs/realtime.md).

1. The client's first frame must be `hello` with a token (browsers cannot set headers on a
   WebSocket) and, optionally, the cursor it holds; otherwise the socket is closed 4400/4401.
2. The connection joins the hub, then replays every visible change after the cursor from the
   database (pull-sync pages), then says `live` and sends fan-out frames from its queue.
3. While live, the session sends from the connection's queue and a second task receives (pings,
   token refreshes: `auth` frames with the access token a refresh gave); the receiver ending
   (the client left, or a frame too big) or a close request from the hub (slow consumer,
   heartbeat timeout, expired token, lost access, too many sockets, shutdown) ends it.
Bad frames get an error frame and the session goes on; frames over 64 KiB close it (1009).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected, WebSocketState

from sitecomms.protocol.cursors import Cursor, InvalidCursor
from sitecomms.protocol.frames import MAX_FRAME_BYTES, ClientFrame, CloseCode, ResyncReason, ServerFrame
from sitecomms.server import logs
from sitecomms.server.metrics import Metrics
from sitecomms.server.realtime.connection import CONTROL, Connection, ConnectionState, control_frame
from sitecomms.server.realtime.hub import Hub
from sitecomms.server.services.access import Access
from sitecomms.server.services.errors import REPORTED, Unauthenticated, describe
from sitecomms.server.services.feed import Feed, change_frame
from sitecomms.server.services.sync import Sync

log = logging.getLogger("sitecomms.realtime")

_REPLAY_PAGE = 1000
_RECEIVER_ENDED = "the client left"  # compared by identity: the close request came from the receiver


class _Closed(Exception):
    def __init__(self, code: CloseCode, reason: str, frame: str | None = None) -> None:
        super().__init__(reason)
        self.code, self.reason, self.frame = code, reason, frame


def _resync(reason: ResyncReason) -> _Closed:
    frame = control_frame(ServerFrame.RESYNC, reason=reason.value)
    return _Closed(CloseCode.RESYNC_REQUIRED, reason.value, frame)


def _error(code: str, message: str) -> str:
    return control_frame(ServerFrame.ERROR, code=code, message=message)


def _parse(message: Mapping[str, Any]) -> dict[str, Any] | str:
    """The frame as a JSON object, or an error frame to send back."""
    data = message.get("text")
    if data is None:
        data = message.get("bytes") or b""
    if len(data) > MAX_FRAME_BYTES:  # uvicorn refuses these first when serving; this covers other servers
        raise _Closed(CloseCode.MESSAGE_TOO_BIG, "frame over 64 KiB")
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _error("malformed_frame", "frames are JSON objects")
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        return _error("malformed_frame", 'frames are JSON objects with a string "type"')
    return frame


class Session:
    def __init__(
        self,
        ws: WebSocket,
        *,
        hub: Hub,
        feed: Feed,
        sync: Sync,
        access: Access,
        hello_timeout: float,
        heartbeat: float,
        queue_frames: int,
        replay_limit: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.ws = ws
        self.metrics = metrics
        self._deliveries = metrics.deliveries if metrics is not None else None
        self.hub, self.feed, self.sync, self.access = hub, feed, sync, access
        self.hello_timeout, self.heartbeat = hello_timeout, heartbeat
        self.queue_frames, self.replay_limit = queue_frames, replay_limit
        self.conn: Connection | None = None

    async def run(self) -> None:
        await self.ws.accept()
        try:
            conn, cursor = await self._hello()
            self.conn = conn
            async with asyncio.timeout(10.0):
                await self.hub.join(conn)
            await self._replay(conn, cursor)
            await self._live(conn)
        except _Closed as closed:
            await self._close(closed.code, closed.reason, closed.frame)
        except (WebSocketDisconnect, WebSocketDisconnected, ConnectionError):
            pass  # the client went away: nothing to tell it
        except TimeoutError:
            await self._close(CloseCode.TRY_AGAIN_LATER, "the server is busy; reconnect shortly")
        except REPORTED as exc:  # logged by its code; whatever it is, the client comes back later
            failure = describe(exc)
            assert failure is not None
            log.warning("realtime session refused (%s): %s", failure.code.value, exc)
            await self._close(CloseCode.TRY_AGAIN_LATER, "the server cannot serve this socket now; reconnect shortly")
        finally:
            if self.conn is not None:
                await self.hub.leave(self.conn)

    # --- 1. hello ---------------------------------------------------------------------------

    async def _hello(self) -> tuple[Connection, Cursor | None]:
        try:
            async with asyncio.timeout(self.hello_timeout):
                message = await self.ws.receive()
        except TimeoutError:
            raise _Closed(CloseCode.UNAUTHENTICATED, "no hello in time") from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        frame = _parse(message)
        if isinstance(frame, str) or frame["type"] != ClientFrame.HELLO:
            raise _Closed(CloseCode.PROTOCOL_ERROR, 'the first frame must be {"type": "hello", "token": ...}')
        token = frame.get("token")
        try:
            if not isinstance(token, str):
                raise Unauthenticated("missing token")
            viewer, expires_at = await self.access.session(token)
        except Unauthenticated as exc:
            raise _Closed(CloseCode.UNAUTHENTICATED, exc.message) from None
        logs.identify(viewer.user_id, viewer.org_id)  # the socket's log records name its user from here on
        cursor: Cursor | None = None
        raw_cursor = frame.get("cursor")
        if raw_cursor is not None:
            try:
                if not isinstance(raw_cursor, str):
                    raise InvalidCursor("cursor must be a string")
                cursor = Cursor.parse(raw_cursor, viewer.org_id)
            except InvalidCursor:
                raise _resync(ResyncReason.INVALID_CURSOR) from None
        return Connection(viewer, expires_at=expires_at, queue_frames=self.queue_frames), cursor

    # --- 2. replay --------------------------------------------------------------------------

    async def _replay(self, conn: Connection, cursor: Cursor | None) -> None:
        org_id = conn.viewer.org_id
        head = await self.feed.head(org_id)
        start = head if cursor is None else cursor.position
        if start > head:
            raise _resync(ResyncReason.CURSOR_AHEAD)
        if head - start > self.replay_limit:
            raise _resync(ResyncReason.TOO_FAR_BEHIND)
        await self._send(
            control_frame(
                ServerFrame.WELCOME,
                user_id=conn.viewer.user_id,
                org_id=org_id,
                role=conn.viewer.role.value,
                cursor=str(Cursor(start, org_id)),
                heartbeat_seconds=self.heartbeat,
                expires_at=conn.expires_at,
            )
        )
        position = start
        while position < head:
            page = await self.sync.page(conn.viewer, Cursor(position, org_id), _REPLAY_PAGE)
            for change in page.changes:
                await self._send(change_frame(change, org_id))
            if self._deliveries is not None:
                self._deliveries.inc(len(page.changes))
            position = Cursor.parse(page.next_cursor, org_id).position
            if not page.has_more:
                break
        conn.sent_upto = max(position, head)
        await self._send(control_frame(ServerFrame.LIVE, cursor=str(Cursor(conn.sent_upto, org_id))))
        conn.state = ConnectionState.LIVE

    # --- 3. live ----------------------------------------------------------------------------

    async def _live(self, conn: Connection) -> None:
        """Send from the queue here while a second task receives; either ending ends both."""
        receiver = asyncio.create_task(self._receiver(conn))
        receiver.add_done_callback(lambda _: conn.close(CloseCode.GOING_AWAY, _RECEIVER_ENDED))
        try:
            while (item := await conn.next_frame()) is not None:
                position, frame = item
                if position != CONTROL:
                    if position <= conn.sent_upto:
                        continue  # already sent by the replay
                    conn.sent_upto = position
                    if self._deliveries is not None:
                        self._deliveries.inc()
                await self._send(frame)
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(receiver, return_exceptions=True)
        if conn.close_reason is not _RECEIVER_ENDED:  # the hub asked: slow consumer, timeout, shutdown
            raise _Closed(conn.close_code, conn.close_reason, conn.close_frame)
        failure = None if receiver.cancelled() else receiver.exception()
        if isinstance(failure, _Closed):  # e.g. a frame over 64 KiB
            raise failure

    async def _receiver(self, conn: Connection) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            conn.last_heard = time.monotonic()
            frame = _parse(message)
            if isinstance(frame, str):
                conn.offer(CONTROL, frame)
                continue
            kind = frame["type"]
            if kind == ClientFrame.PING:
                conn.offer(CONTROL, control_frame(ServerFrame.PONG))
            elif kind == ClientFrame.PONG:
                pass
            elif kind == ClientFrame.AUTH:
                conn.offer(CONTROL, await self._refresh(conn, frame.get("token")))
            elif kind == ClientFrame.HELLO:
                conn.offer(CONTROL, _error("already_authenticated", "hello is only the first frame"))
            else:
                conn.offer(CONTROL, _error("unknown_type", f"unknown frame type {kind[:50]!r}"))

    async def _refresh(self, conn: Connection, token: object) -> str:
        try:
            if not isinstance(token, str):
                raise Unauthenticated("missing token")
            viewer, expires_at = await self.access.session(token)
        except Unauthenticated as exc:
            return _error("unauthenticated", exc.message)
        except REPORTED:
            return _error("unavailable", "the token could not be checked now; send it again shortly")
        if viewer != conn.viewer:
            return _error("unauthenticated", "the token is for another user or session")
        conn.expires_at = max(conn.expires_at, expires_at)
        return control_frame(ServerFrame.AUTHENTICATED, expires_at=conn.expires_at)

    # --- sending and closing ---------------------------------------------------------------

    async def _send(self, frame: str) -> None:
        await self.ws.send_text(frame)

    async def _close(self, code: CloseCode, reason: str, frame: str | None = None) -> None:
        if self.ws.application_state is not WebSocketState.CONNECTED:
            return
        if self.metrics is not None:  # a resync's reason is a ResyncReason value; other reasons are not labels
            self.metrics.closed(int(code), reason if code is CloseCode.RESYNC_REQUIRED else "")
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                if frame is not None:
                    await self._send(frame)
                await self.ws.close(code=int(code), reason=reason[:120])


def endpoint(make_session: Callable[[WebSocket], Session]) -> Callable[[WebSocket], Awaitable[None]]:
    async def realtime(ws: WebSocket) -> None:
        await make_session(ws).run()

    return realtime
