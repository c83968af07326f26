"""`Client`: the offline-first SDK in one object.

Writes happen locally first. `send()` stores the message as `queued` with a fresh idempotency
key and returns it at once; the outbox task delivers queued messages in order whenever the
server answers, retrying with jittered backoff, and records the server's id (`sent`). Because
the key travels with every retry and the server treats it as a database constraint, a message
reaches the server exactly once, also when the process dies between the server's commit and
the local update: on restart the retry returns the same message.

The connection task keeps the local copy current: pull sync from the stored cursor (each page
and its cursor in one local transaction), then one realtime socket resuming from that cursor,
reconnecting with backoff. The session (`_session`) hands every request a fresh access token,
refreshing it silently; an open socket gets each new one as an `auth` frame. A socket the server
closes with 4401 reconnects after a refresh (or, when the refresh is refused, the client is
signed out); one closed with 4429 (another socket of this user took its place) stays closed
until `reconnect()`. Everything the server says is decoded into the protocol's
dataclasses where it arrives (`_api` for HTTP, `_parse` for frames) and goes through the
store's single writer. Observers (`watch_*`) yield fresh state after each local change.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from sitecomms.client._api import Api
from sitecomms.client._errors import (
    AuthenticationError,
    NotFound,
    RequestRejected,
    ServerUnavailable,
    SignedOut,
    SiteCommsError,
)
from sitecomms.client._models import ConnectionState, Conversation, Me, Message
from sitecomms.client._observers import ALL, Observers
from sitecomms.client._session import Session
from sitecomms.client._store import LocalStore
from sitecomms.protocol.backoff import RECONNECT, RETRY_SEND
from sitecomms.protocol.decoding import CHANGE_TYPES, WireError, decode
from sitecomms.protocol.errors import ErrorCode
from sitecomms.protocol.frames import ClientFrame, CloseCode, ServerFrame
from sitecomms.protocol.limits import MAX_CONTENT_CHARS
from sitecomms.protocol.models import ChangeFrame, ReceiptsView

log = logging.getLogger("sitecomms.client")

_LIVE_BATCH = 500
_PONG = orjson.dumps({"type": ClientFrame.PONG}).decode()


class _CorruptFrame(Exception):
    pass


class _Reauthenticated(Exception):
    """The server closed the socket (4401) and a refresh renewed the session: reconnect, with backoff."""


class _Displaced(Exception):
    """The server closed the socket for a newer one of this user (4429): do not reconnect by itself."""


class Client:
    """An offline-first SiteComms client for one user, on a local SQLite store.

    >>> client = await Client.open("http://127.0.0.1:8000", "maya.db")  # doctest: +SKIP
    >>> if client.me is None:
    ...     await client.login("medic1@demo.example", "demo-password")
    >>> await client.start()  # sync, go live, deliver the outbox, in the background
    >>> message = await client.send(conversation_id, "Need more dressings")  # status "queued"
    >>> async for conversations in client.watch_conversations(): ...
    """

    def __init__(self, store: LocalStore, api: Api, session: Session, me: Me | None) -> None:
        self._store = store
        self._api = api
        self._session = session
        self._me = me
        self._observers = Observers()
        self._state = ConnectionState.OFFLINE
        self._state_watchers: set[asyncio.Event] = set()  # one per watch_connection() iterator
        self._outbox_wake = asyncio.Event()
        self._signed_in = asyncio.Event()
        self._resume = asyncio.Event()  # reconnect after a 4429
        self._socket_expires_at: str | None = None  # the live socket's token expiry, as the server said
        self._socket_authenticated = asyncio.Event()  # set by each `authenticated` frame
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.ws_connect: Callable[[str], Any] = lambda url: connect(url, open_timeout=10, max_size=2**24)
        if me is not None:
            self._signed_in.set()

    @classmethod
    async def open(
        cls,
        server_url: str,
        store_path: str | Path,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Client:
        """Open (or create) the local store; a session saved in it is resumed.

        `clock` (epoch seconds) decides when the access token is due for a refresh."""
        store = await LocalStore.open(store_path)
        api = Api(server_url, transport=transport)
        session = await Session.load(api, store, clock)
        return cls(store, api, session, await store.run(store.core.me))

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # --- session ---------------------------------------------------------------------------

    @property
    def me(self) -> Me | None:
        return self._me

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def is_connected(self) -> bool:
        return self._state is ConnectionState.LIVE

    @property
    def has_session(self) -> bool:
        """Whether the store holds a session (it may still turn out to have ended on the server)."""
        return self._session.credentials is not None

    async def login(self, email: str, password: str, *, device: str | None = None) -> Me:
        """Sign in (needs the server) as this store's user, naming this device in "my devices".

        The store keeps the session (renewed silently for as long as it is used); queued
        messages stay queued and go out."""
        grant = await self._api.login(email, password, device)
        user = grant.view.user
        if self._me is not None and self._me.user_id != user.id:
            raise AuthenticationError("this local store belongs to another user; open another store")
        user_meta: dict[str, str | None] = {
            "user_id": user.id,
            "org_id": user.org_id,
            "display_name": user.display_name,
            "role": user.role.value,
        }
        await self._session.signed_in(grant, user_meta)  # only now: another user's token must never be used here
        self._me = Me(user.id, user.org_id, user.display_name, user.role)
        self._signed_in.set()
        self._resume.set()
        self._outbox_wake.set()
        if self._state in (ConnectionState.SIGNED_OUT, ConnectionState.TOO_MANY_SOCKETS):
            self._set_state(ConnectionState.OFFLINE)
        return self._me

    async def sign_out(self) -> None:
        """End this device's session (on the server when it answers) and forget its tokens.

        The local copy and the outbox stay: queued messages go out after the same user signs in."""
        await self._session.sign_out()
        self._signed_out("signed out on request")

    def reconnect(self) -> None:
        """Go live again after the server closed the socket for another of this user's (4429)."""
        self._resume.set()

    async def start(self) -> None:
        """Run sync, the realtime connection and the outbox in the background until `close()`."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._connection_loop(), name="sitecomms-client-connection"),
                asyncio.create_task(self._outbox_loop(), name="sitecomms-client-outbox"),
            ]

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._set_state(ConnectionState.CLOSED)
        await self._api.close()
        await self._store.close()

    # --- writes ----------------------------------------------------------------------------

    async def send(self, conversation_id: str, text: str) -> Message:
        """Store the message locally as `queued` and return it; the outbox delivers it."""
        if not text.strip() or len(text) > MAX_CONTENT_CHARS or "\x00" in text:
            code = ErrorCode.VALIDATION_FAILED
            raise RequestRejected(code.http_status, code, f"a message is 1 to {MAX_CONTENT_CHARS} characters")
        known = {c.id for c in await self.conversations()}
        if conversation_id not in known:
            code = ErrorCode.NOT_FOUND
            raise NotFound(code.http_status, code, "no such conversation in the local store (sync first)")
        message = await self._store.run(self._store.core.enqueue, conversation_id, text)
        self._observers.changed({conversation_id})
        self._outbox_wake.set()
        return message

    async def mark_read(self, conversation_id: str) -> None:
        """Mark the conversation read up to its newest message, locally at once, then on the server."""
        if await self._store.run(self._store.core.mark_read, conversation_id):
            self._observers.changed({conversation_id})
            self._outbox_wake.set()

    async def sync_now(self) -> None:
        """Pull every change since the stored cursor (pull-to-refresh). Raises if the server is down."""
        while True:
            cursor = await self._store.run(self._store.core.get_meta, "cursor")
            try:
                page = await self._session.call(functools.partial(self._api.sync, cursor))
            except RequestRejected as exc:
                if cursor is None or exc.code not in (ErrorCode.INVALID_CURSOR, ErrorCode.CURSOR_AHEAD):
                    raise
                log.warning("the server refused our cursor (%s): taking a fresh snapshot", exc.code)
                await self._store.run(self._store.core.set_meta, {"cursor": None})
                continue
            touched = await self._store.run(
                functools.partial(self._store.core.apply, reset=page.reset), page.changes, page.next_cursor
            )
            self._observers.changed(touched or {ALL})
            if not page.has_more:
                return

    # --- reads and observers ---------------------------------------------------------------

    async def conversations(self) -> list[Conversation]:
        return await self._store.run(self._store.core.conversations)

    async def thread(self, conversation_id: str, limit: int = 100) -> list[Message]:
        return await self._store.run(self._store.core.thread, conversation_id, limit)

    async def unread_total(self) -> int:
        return await self._store.run(self._store.core.unread_total)

    async def receipts(self, conversation_id: str, message_id: str) -> ReceiptsView:
        """Who of a sent message's recipients has read it, asked of the server (online only).

        The broadcast's are an admin's to ask (`RequestRejected` 403 for a medic); in a direct
        conversation either side may ask. Raises `ServerUnavailable` when the server cannot be
        reached and `NotFound` for a message the user may not see."""
        return await self._session.call(functools.partial(self._api.receipts, conversation_id, message_id))

    async def outbox_size(self) -> int:
        return await self._store.run(self._store.core.outbox_size)

    def watch_conversations(self) -> AsyncIterator[list[Conversation]]:
        return self._observers.watch(ALL, self.conversations)

    def watch_thread(self, conversation_id: str, limit: int = 100) -> AsyncIterator[list[Message]]:
        return self._observers.watch(conversation_id, lambda: self.thread(conversation_id, limit))

    def watch_unread_total(self) -> AsyncIterator[int]:
        return self._observers.watch(ALL, self.unread_total)

    async def watch_connection(self) -> AsyncIterator[ConnectionState]:
        """The connection state now, then each time it changes (each watcher has its own event,
        so one watcher's wake-up never swallows another's)."""
        changed = asyncio.Event()
        self._state_watchers.add(changed)
        try:
            while True:
                changed.clear()
                yield self._state
                await changed.wait()
        finally:
            self._state_watchers.discard(changed)

    def _set_state(self, state: ConnectionState) -> None:
        if state is not self._state:
            self._state = state
            for changed in self._state_watchers:
                changed.set()

    # --- the connection: pull sync, then live -----------------------------------------------

    async def _connection_loop(self) -> None:
        failures = 0
        while not self._closed:
            await self._signed_in.wait()
            self._set_state(ConnectionState.CONNECTING)
            try:
                await self.sync_now()
                await self._live()
                failures = 0
            except AuthenticationError as exc:
                self._signed_out(str(exc))
                continue
            except _Displaced as exc:
                log.warning("live updates stopped: %s (reconnect() resumes them)", exc)
                self._set_state(ConnectionState.TOO_MANY_SOCKETS)
                self._resume.clear()
                await self._resume.wait()
                failures = 0
                continue
            except (
                ServerUnavailable, OSError, InvalidHandshake, ConnectionClosed, _CorruptFrame, _Reauthenticated,
                TimeoutError,
            ) as exc:  # fmt: skip
                log.info("connection lost: %s", exc)
            except SiteCommsError as exc:
                log.warning("connection failed: %s", exc)
            self._set_state(ConnectionState.OFFLINE)
            failures += 1
            await asyncio.sleep(RECONNECT.delay(failures - 1))

    def _signed_out(self, reason: str) -> None:
        log.warning("signed out: %s", reason)
        self._signed_in.clear()
        self._set_state(ConnectionState.SIGNED_OUT)

    async def _live(self) -> None:
        """One socket: hello from the stored cursor, then apply frames in batches until it closes."""
        cursor = await self._store.run(self._store.core.get_meta, "cursor")
        frames: asyncio.Queue[ChangeFrame] = asyncio.Queue(10_000)
        sent = [await self._session.fresh()]  # the last token this socket was given
        async with self.ws_connect(self._api.realtime_url()) as ws:
            hello = {"type": ClientFrame.HELLO, "token": sent[0], "cursor": cursor}
            await ws.send(orjson.dumps(hello).decode())
            applier = asyncio.create_task(self._apply_frames(frames))
            reader = asyncio.create_task(self._read_frames(ws, frames))
            keeper = asyncio.create_task(self._keep_authenticated(ws, sent))
            try:
                # Whichever ends first ends this socket: the reader when the socket closes or a
                # frame is corrupt, the applier only by failing on a change it cannot apply (then
                # at once, not when the next frame happens to arrive), the keeper when the
                # session ended. None of them ends without an error.
                await asyncio.wait({reader, applier, keeper}, return_when=asyncio.FIRST_COMPLETED)
                for task in (applier, keeper):
                    if task.done():
                        task.result()
                reader.result()
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                reason = exc.rcvd.reason if exc.rcvd is not None else ""
                if code == CloseCode.UNAUTHENTICATED:  # expired, or access changed: SignedOut if it cannot renew
                    await self._session.renew(sent[0])
                    raise _Reauthenticated(f"the server closed the socket ({reason}); the session was renewed") from exc
                if code == CloseCode.TOO_MANY_SOCKETS:
                    raise _Displaced(reason or "too many sockets for this user") from exc
                if code != CloseCode.RESYNC_REQUIRED:
                    raise
                log.info("the server asked for a resync (%s)", reason)
            finally:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError, SiteCommsError):
                    await keeper
                reader.cancel()
                await asyncio.wait({reader})
                if not reader.cancelled():
                    reader.exception()  # retrieved: raised above, or superseded by the applier's error
                if not applier.done():  # what arrived is applied (and its cursor saved) before we reconnect
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(30):
                            await frames.join()
                applier.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await applier

    async def _keep_authenticated(self, ws: Any, sent: list[str]) -> None:
        """Give the socket each new access token (`auth`), renewing it when due; `sent[0]` is the
        last one given. Raises `SignedOut` when the session cannot be renewed."""
        changed = self._session.watch()
        failures = 0
        try:
            while True:
                changed.clear()
                credentials = self._session.credentials
                if credentials is None:
                    raise SignedOut("the session has ended: sign in again")
                if credentials.access_token != sent[0]:
                    sent[0] = credentials.access_token
                    await ws.send(orjson.dumps({"type": ClientFrame.AUTH, "token": sent[0]}).decode())
                    continue
                wait = credentials.refresh_at - self._session.now()
                if wait <= 0:
                    try:
                        await self._session.renew(sent[0])
                        failures = 0
                        continue
                    except ServerUnavailable as exc:  # tried again later; the token may still be good
                        log.info("could not renew the session now: %s", exc)
                        wait = RECONNECT.delay(failures)
                        failures += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait if math.isfinite(wait) else None):  # inf: no known expiry
                        await changed.wait()
        finally:
            self._session.unwatch(changed)

    async def _read_frames(self, ws: Any, frames: asyncio.Queue[ChangeFrame]) -> None:
        async for raw in ws:
            frame = self._parse(raw)
            if isinstance(frame, ChangeFrame):
                await frames.put(frame)
                continue
            kind = frame.get("type")
            if kind == ServerFrame.PING:
                await ws.send(_PONG)
            elif kind == ServerFrame.LIVE:
                self._set_state(ConnectionState.LIVE)
                await self._store.run(self._store.core.retry_now)
                self._outbox_wake.set()
            elif kind in (ServerFrame.WELCOME, ServerFrame.AUTHENTICATED):
                self._socket_expires_at = str(frame.get("expires_at"))
                if kind == ServerFrame.AUTHENTICATED:
                    self._socket_authenticated.set()
            elif kind == ServerFrame.ERROR:
                log.warning("the server refused a frame: %s", frame)
            # any other frame (welcome, pong, resync, a type a newer server added) needs nothing

    def _parse(self, raw: str | bytes) -> ChangeFrame | dict[str, Any]:
        """A change frame decoded into its dataclass; any other frame as its JSON object."""
        try:
            frame = orjson.loads(raw)
            if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
                raise WireError("not a frame (an object with a type)")
            if frame["type"] in CHANGE_TYPES:
                return decode(ChangeFrame, frame)
        except ValueError as exc:  # not JSON (orjson's error is a ValueError), or a WireError
            log.error("corrupt frame skipped (%s): %r; resyncing", exc, raw[:200])
            raise _CorruptFrame(str(exc)) from exc
        return frame

    async def _apply_frames(self, frames: asyncio.Queue[ChangeFrame]) -> None:
        while True:
            batch = [await frames.get()]
            while len(batch) < _LIVE_BATCH and not frames.empty():
                batch.append(frames.get_nowait())
            try:
                touched = await self._store.run(self._store.core.apply, batch, batch[-1].cursor)
            finally:
                for _ in batch:
                    frames.task_done()
            self._observers.changed(touched)

    # --- the outbox ------------------------------------------------------------------------

    async def _outbox_loop(self) -> None:
        while not self._closed:
            await self._signed_in.wait()
            try:
                await self._deliver_due()
                await self._push_reads()
            except AuthenticationError as exc:
                self._signed_out(str(exc))
                continue
            except ServerUnavailable as exc:
                log.info("outbox: server unavailable (%s)", exc)
            next_at = await self._store.run(self._store.core.next_attempt_at)
            timeout = None if next_at is None else max(0.0, next_at - time.time())
            self._outbox_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._outbox_wake.wait()

    async def _deliver_due(self) -> None:
        for message, attempts in await self._store.run(self._store.core.due, time.time()):
            try:
                server_message = await self._session.call(
                    functools.partial(self._api.send, message.conversation_id, message.content, message.idempotency_key)
                )
            except ServerUnavailable as exc:
                delay = RETRY_SEND.delay(attempts)
                await self._store.run(self._store.core.retry_later, message.local_id, delay, str(exc))
                raise
            except (AuthenticationError, asyncio.CancelledError):
                raise
            except RequestRejected as exc:
                log.error("the server refused message %d for good: %s", message.local_id, exc)
                self._observers.changed({await self._store.run(self._store.core.failed, message.local_id, str(exc))})
                continue
            touched = await self._store.run(self._store.core.delivered, message.local_id, server_message)
            self._observers.changed({touched})

    async def _push_reads(self) -> None:
        for conversation_id, position in await self._store.run(self._store.core.pending_reads):
            with contextlib.suppress(NotFound):  # the conversation is gone: nothing to mark
                await self._session.call(functools.partial(self._api.mark_read, conversation_id, position))
            await self._store.run(self._store.core.read_pushed, conversation_id, position)
