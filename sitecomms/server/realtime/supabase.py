"""`/realtime/v1/websocket`: Supabase Realtime's `postgres_changes`, served from the hub.

One socket (`PhoenixSocket`) carries every channel the app joins (at most `MAX_CHANNELS`). A
`phx_join` must carry a signed-in user's access token (`access_token`). A token that is refused
(the anon key too) gets an error reply and `phx_close`, so the client stops; a join with no
token at all is not told to stop the first time for its topic on the socket (a bare error reply),
since a client still restoring its stored session rejoins in about 1 s with it. The bindings must be ones
services/pg_changes.py serves (anything else: a `system` error, the error reply, `phx_close`).
Each joined channel is a `Channel`, a hub `Connection` with the channel's viewer: the org's
reader reads the stream once for every socket, asks the visibility policy, and `deliver`s to
the channel, which renders the change only for the bindings it fires (one frame, their ids).

The join is answered only once the channel is registered with the hub and the stream head is
read, so a write after `SUBSCRIBED` is never missed. With the resume option
(`config.broadcast.resume_cursor`, a cursor taken from an earlier record's `cursor`) the
changes after it are replayed from the database right after the reply, then the channel goes
live; without it the channel starts at the head (Supabase's behaviour). `access_token` pushes
re-authorise the channel; an expired, revoked or refused token (the hub's sweep and access
checks close the connection) ends it with a `system` error and `phx_close`; a database
failure with `phx_error` (the client rejoins, and resumes if it opted in). A slow consumer (a
channel's queue full) closes the whole socket with 1013, as the SiteComms socket is closed: the
client reconnects and rejoins; a closed channel that cannot tell the client within
`STUCK_SECONDS` (it stopped reading) gets the socket closed too.
Heartbeats are answered; a socket silent for `IDLE_SECONDS` is closed, and one without a
channel (never joined, refused, or left) for the hello timeout is closed 4401 whatever it sends,
as /v1/realtime closes a socket without a hello: no token, no socket held. Frames over 64 KiB
close the socket (1009); a frame that is not a Phoenix message gets an error reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from sitecomms.protocol.cursors import Cursor, InvalidCursor
from sitecomms.protocol.frames import MAX_FRAME_BYTES, CloseCode
from sitecomms.server import logs
from sitecomms.server.realtime import phoenix
from sitecomms.server.realtime.connection import CONTROL, Connection, ConnectionState
from sitecomms.server.realtime.hub import Hub
from sitecomms.server.realtime.phoenix import BadFrame, Message
from sitecomms.server.services import pg_changes
from sitecomms.server.services.access import Access
from sitecomms.server.services.errors import REPORTED, Unauthenticated
from sitecomms.server.services.feed import Feed, FeedItem
from sitecomms.server.services.pg_changes import Binding, BindingError
from sitecomms.server.services.visibility import Viewer

log = logging.getLogger("sitecomms.realtime")

MAX_CHANNELS = 10  # per socket
IDLE_SECONDS = 60.0  # Phoenix's default; supabase-js heartbeats every 25 s
STUCK_SECONDS = 2.0  # a closed channel's task has this long to tell the client before the socket closes
RESUME_KEY = "resume_cursor"  # inside config.broadcast
NEEDS_USER = (
    "a signed-in user's access token is required: sign in, then `await supabase.realtime.setAuth()` before subscribe()"
)
_REPLAY_PAGE = 1000
_PASSING: tuple[type[Exception], ...] = (TimeoutError, *REPORTED)  # the client retries the join
_CLOSING_CHANNEL = {CloseCode.UNAUTHENTICATED, CloseCode.TOO_MANY_SOCKETS}  # the rest: phx_error, the client rejoins


class Channel(Connection):
    """One joined channel: a hub connection whose frames are Supabase's."""

    hub_heartbeat = False  # the socket's heartbeats are Phoenix's

    __slots__ = ("_socket", "bindings", "join", "on_close", "task", "vsn", "with_cursor")

    def __init__(
        self,
        viewer: Viewer,
        join: Message,
        bindings: list[Binding],
        *,
        socket: object,
        vsn: str,
        with_cursor: bool,
        **kw: Any,
    ) -> None:
        super().__init__(viewer, **kw)
        self.join, self.bindings, self.vsn, self.with_cursor = join, bindings, vsn, with_cursor
        self._socket = socket
        self.task: asyncio.Task[None] | None = None
        self.on_close: Callable[[Channel], None] | None = None  # told when the hub asks it to close

    def close(self, code: CloseCode, reason: str, frame: str | None = None) -> None:
        first = not self.closing
        super().close(code, reason, frame)
        if first and self.on_close is not None:
            self.on_close(self)

    @property
    def socket(self) -> object:
        return self._socket  # the channels of one socket count once against the user's cap

    @property
    def topic(self) -> str:
        return self.join.topic

    def frame_of(self, item: FeedItem) -> str | None:
        change = pg_changes.change_of(item)
        if change is None:
            return None
        ids = [binding.id for binding in self.bindings if binding.fires_for(change)]
        if not ids:
            return None
        data = pg_changes.data_json(item, self.viewer, with_cursor=self.with_cursor)
        return phoenix.changes(self.vsn, self.topic, ids, data)

    def deliver(self, item: FeedItem) -> None:
        frame = self.frame_of(item)
        if frame is not None:
            self.offer(item.position, frame)


class PhoenixSocket:
    def __init__(
        self,
        ws: WebSocket,
        *,
        hub: Hub,
        feed: Feed,
        access: Access,
        queue_frames: int,
        replay_limit: int,
        hello_timeout: float,
    ) -> None:
        self.ws, self.hub, self.feed, self.access = ws, hub, feed, access
        self.hello_timeout = hello_timeout
        self.queue_frames, self.replay_limit = queue_frames, replay_limit
        self.vsn = phoenix.V1
        self.channels: dict[str, Channel] = {}
        self._untokened: set[str] = set()  # topics whose join came once without any token
        self._send_lock = asyncio.Lock()
        self._watchers: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        vsn = self.ws.query_params.get("vsn", phoenix.V1)
        await self.ws.accept()
        try:
            if vsn not in phoenix.VERSIONS:
                await self.ws.close(1008, f"unsupported vsn; this server speaks {' and '.join(phoenix.VERSIONS)}")
                return
            self.vsn = vsn
            await self._receive_forever()
        except (WebSocketDisconnect, ConnectionError, RuntimeError):
            pass  # the client went away (Starlette raises RuntimeError for a send after the close)
        finally:
            for channel in list(self.channels.values()):
                await self._drop(channel)
            for watcher in list(self._watchers):
                watcher.cancel()
            if self.ws.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await self.ws.close(1000)

    async def send(self, frame: str) -> None:
        async with self._send_lock:
            await self.ws.send_text(frame)

    # --- receiving ---------------------------------------------------------------------------

    async def _receive_forever(self) -> None:
        loop = asyncio.get_running_loop()
        alone_since: float | None = None  # when the socket last had no channel
        while True:
            timeout = IDLE_SECONDS
            if self.channels:
                alone_since = None
            else:
                alone_since = loop.time() if alone_since is None else alone_since
                timeout = min(timeout, max(0.0, alone_since + self.hello_timeout - loop.time()))
            try:
                async with asyncio.timeout(timeout):
                    message = await self.ws.receive()
            except TimeoutError:
                if self.channels:
                    await self.ws.close(1000, "no heartbeat")
                else:  # as /v1/realtime's hello: heartbeats alone do not hold a socket
                    await self.ws.close(int(CloseCode.UNAUTHENTICATED), "no channel joined in time")
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:  # binary: the v2 client's broadcast pushes (kind 3) only; not served
                continue
            if len(text) > MAX_FRAME_BYTES:  # uvicorn refuses these first; this covers other servers
                await self.ws.close(int(CloseCode.MESSAGE_TOO_BIG), "frame over 64 KiB")
                return
            try:
                await self._handle(phoenix.decode(text, self.vsn))
            except BadFrame as bad:
                error = {"status": "error", "response": {"reason": f"malformed frame: {bad}"}}
                await self.send(phoenix.encode_obj(self.vsn, None, bad.ref, phoenix.PHOENIX, phoenix.REPLY, error))

    async def _handle(self, msg: Message) -> None:
        if msg.topic == phoenix.PHOENIX and msg.event == phoenix.HEARTBEAT:
            await self.send(phoenix.reply(self.vsn, msg, "ok", {}))
        elif msg.event == phoenix.JOIN:
            await self._join(msg)
        elif (channel := self.channels.get(msg.topic)) is None:
            await self.send(phoenix.reply(self.vsn, msg, "error", {"reason": "unmatched topic"}))
        elif msg.event == phoenix.LEAVE:
            await self.send(phoenix.reply(self.vsn, msg, "ok", {}))
            await self._end(channel, phoenix.CLOSE)
        elif msg.event == phoenix.ACCESS_TOKEN:
            await self._reauthorize(channel, msg.payload.get("access_token"))
        elif msg.ref is not None:
            reason = f"{msg.event[:50]} is not served here: only postgres_changes"
            await self.send(phoenix.reply(self.vsn, msg, "error", {"reason": reason}))

    # --- joining -----------------------------------------------------------------------------

    async def _refuse(self, msg: Message, reason: str, *, extension: str | None = None) -> None:
        """A permanent no: (a system error,) the error reply, then phx_close so the client stops."""
        if extension is not None:
            await self.send(phoenix.system(self.vsn, msg.topic, extension, "error", reason))
        await self.send(phoenix.reply(self.vsn, msg, "error", {"reason": reason}))
        await self.send(phoenix.encode_obj(self.vsn, msg.join_ref, msg.join_ref, msg.topic, phoenix.CLOSE, {}))

    async def _join(self, msg: Message) -> None:
        old = self.channels.get(msg.topic)
        if old is not None:  # a join of a joined topic replaces it (Phoenix closes the old one)
            await self._end(old, phoenix.CLOSE)
        if not msg.topic.startswith("realtime:") or msg.topic == "realtime:":
            return await self._refuse(msg, 'topics are "realtime:<name>"')
        if len(self.channels) >= MAX_CHANNELS:
            return await self._refuse(msg, f"too_many_channels: at most {MAX_CHANNELS} per socket")
        config = msg.payload.get("config")
        config = config if isinstance(config, dict) else {}
        try:
            bindings = pg_changes.parse_bindings(config.get("postgres_changes"))
        except BindingError as exc:
            return await self._refuse(msg, str(exc), extension=phoenix.POSTGRES_CHANGES)
        token = msg.payload.get("access_token")
        try:
            if not isinstance(token, str) or not token:
                raise Unauthenticated(NEEDS_USER)
            viewer, expires_at = await self.access.session(token)
        except Unauthenticated as exc:
            reason = exc.message if exc.message == NEEDS_USER else f"{exc.message}; {NEEDS_USER}"
            if token is None and msg.topic not in self._untokened and len(self._untokened) < MAX_CHANNELS:
                # no token yet: an app that subscribed while its stored session was still being
                # restored (pitfall P1) rejoins in about 1 s with it; the bare error reply lets it,
                # once per topic; a token that is refused (the anon key too) is a final no
                self._untokened.add(msg.topic)
                await self.send(phoenix.reply(self.vsn, msg, "error", {"reason": f"Unauthorized: {reason}"}))
                return None
            return await self._refuse(msg, f"Unauthorized: {reason}", extension=phoenix.SYSTEM)
        except REPORTED:  # passing: a bare error reply, and the client retries the join
            await self.send(phoenix.reply(self.vsn, msg, "error", {"reason": "the server cannot check tokens now"}))
            return None
        logs.identify(viewer.user_id, viewer.org_id)
        broadcast = config.get("broadcast")
        resume = broadcast.get(RESUME_KEY) if isinstance(broadcast, dict) else None
        channel = Channel(
            viewer,
            msg,
            bindings,
            socket=self,
            vsn=self.vsn,
            with_cursor=isinstance(broadcast, dict) and RESUME_KEY in broadcast,
            expires_at=expires_at,
            queue_frames=self.queue_frames,
        )
        channel.on_close = self._watch
        self.channels[msg.topic] = channel
        channel.task = asyncio.create_task(self._serve(channel, resume), name=f"sitecomms-phoenix-{msg.topic[:40]}")
        return None

    async def _serve(self, channel: Channel, resume: object) -> None:
        """Register, answer the join, replay (resume), then send from the queue until it ends."""
        msg = channel.join
        try:
            try:
                async with asyncio.timeout(10.0):
                    await self.hub.join(channel)
                head = await self.feed.head(channel.viewer.org_id)
            except _PASSING as exc:
                log.warning("supabase join refused for now (%r)", exc)
                if self.channels.get(channel.topic) is channel:
                    del self.channels[channel.topic]
                await self.send(phoenix.reply(self.vsn, msg, "error", {"reason": "the server is busy; retrying"}))
                return
            echo = [binding.echo for binding in channel.bindings]
            await self.send(phoenix.reply(self.vsn, msg, "ok", {"postgres_changes": echo}))
            await self.send(
                phoenix.system(self.vsn, channel.topic, phoenix.POSTGRES_CHANGES, "ok", "Subscribed to PostgreSQL")
            )
            channel.sent_upto = await self._replay(channel, resume, head)
            channel.state = ConnectionState.LIVE
            while (item := await channel.next_frame()) is not None:
                position, frame = item
                if position != CONTROL:
                    if position <= channel.sent_upto:
                        continue  # sent by the replay
                    channel.sent_upto = position
                await self.send(frame)
            if channel.close_code is CloseCode.RESYNC_REQUIRED:  # a slow socket: the whole socket goes
                await self._close_socket(f"{channel.close_reason}: reconnect")
            elif channel.close_code in _CLOSING_CHANNEL:
                await self.send(phoenix.system(self.vsn, channel.topic, phoenix.SYSTEM, "error", channel.close_reason))
                await self._end(channel, phoenix.CLOSE)
            else:
                await self._end(channel, phoenix.ERROR, {"reason": channel.close_reason})
        except (WebSocketDisconnect, ConnectionError, RuntimeError):
            channel.on_close = None
            channel.close(CloseCode.GOING_AWAY, "the client left")
        except REPORTED as exc:  # a replay read failed: the client rejoins
            log.warning("supabase channel replay failed (%r)", exc)
            with contextlib.suppress(Exception):
                await self._end(channel, phoenix.ERROR, {"reason": "the server cannot read now; rejoining"})
        finally:
            await self.hub.leave(channel)

    async def _replay(self, channel: Channel, resume: object, head: int) -> int:
        """Send what the channel missed after its resume cursor; returns the position sent up to."""
        if resume is None:
            return head
        org_id = channel.viewer.org_id
        try:
            if not isinstance(resume, str):
                raise InvalidCursor("resume_cursor must be a string")
            start = Cursor.parse(resume, org_id).position
            if start > head:
                raise InvalidCursor("resume_cursor is ahead of the stream")
            if head - start > self.replay_limit:
                raise InvalidCursor(f"resume_cursor is more than {self.replay_limit} changes behind")
        except InvalidCursor as exc:
            detail = f"cannot resume ({exc}): refetch, then resume from the records' cursors"
            await self.send(
                phoenix.system(self.vsn, channel.topic, phoenix.POSTGRES_CHANGES, "error", detail, code="resync")
            )
            return head
        position = start
        while position < head:
            batch = await self.feed.read(org_id, position, _REPLAY_PAGE)
            for item in batch.items:
                if item.position <= head and item.visible_to(channel.viewer):
                    frame = channel.frame_of(item)
                    if frame is not None:
                        await self.send(frame)
            position = batch.upto
            if not batch.has_more:
                break
        return max(position, head)

    # --- token refresh and ending --------------------------------------------------------------

    async def _reauthorize(self, channel: Channel, token: object) -> None:
        try:
            if not isinstance(token, str):
                raise Unauthenticated("access_token must be a string")
            viewer, expires_at = await self.access.session(token)
            same = (viewer.user_id, viewer.org_id, viewer.role) == (
                channel.viewer.user_id,
                channel.viewer.org_id,
                channel.viewer.role,
            )
            if not same:
                raise Unauthenticated("the token is for another user")
        except Unauthenticated as exc:
            channel.close(CloseCode.UNAUTHENTICATED, f"Unauthorized: {exc.message}")
            return
        except REPORTED:
            return  # cannot tell now: the current token stands until it expires
        channel.viewer = viewer
        channel.expires_at = max(channel.expires_at, expires_at)

    def _watch(self, channel: Channel) -> None:
        """The hub closed a channel (slow consumer, expiry, lost access, shutdown): if its task
        cannot tell the client within `STUCK_SECONDS` (a client that stopped reading), the
        socket is closed, so a stalled client holds nothing for long."""
        task = asyncio.create_task(self._unstick(channel), name="sitecomms-phoenix-watch")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _unstick(self, channel: Channel) -> None:
        if channel.task is None or channel.task.done():
            return
        await asyncio.wait({channel.task}, timeout=STUCK_SECONDS)
        if not channel.task.done():
            log.info("closing a Phoenix socket that stopped reading (%s)", channel.close_reason)
            await self._close_socket("the client stopped reading")

    async def _close_socket(self, reason: str) -> None:
        """Close the socket (1013: the client reconnects and rejoins; with resume, without a gap).
        A client that reads nothing gets its connection aborted by the server's close timeout."""
        if self.ws.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(30.0):
                    await self.ws.close(int(CloseCode.TRY_AGAIN_LATER), reason[:120])

    async def _end(self, channel: Channel, event: str, payload: object | None = None) -> None:
        """Tell the client the channel ended (phx_close or phx_error) and forget it."""
        if self.channels.get(channel.topic) is channel:
            del self.channels[channel.topic]
            jr = channel.join.join_ref
            await self.send(phoenix.encode_obj(self.vsn, jr, jr, channel.topic, event, payload or {}))
        channel.on_close = None
        channel.close(CloseCode.GOING_AWAY, "channel ended")
        current = asyncio.current_task()
        if channel.task is not None and channel.task is not current:
            channel.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await channel.task

    async def _drop(self, channel: Channel) -> None:
        self.channels.pop(channel.topic, None)
        channel.on_close = None
        channel.close(CloseCode.GOING_AWAY, "socket closed")
        if channel.task is not None:
            channel.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await channel.task


def endpoint(make_socket: Callable[[WebSocket], PhoenixSocket]) -> Callable[[WebSocket], Awaitable[None]]:
    async def supabase_realtime(ws: WebSocket) -> None:
        await make_socket(ws).run()

    return supabase_realtime
