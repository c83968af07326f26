"""A small test client for `GET /v1/realtime` on a real server, and a tiny HTTP helper.

`RealtimeClient.connect(base_url, token, cursor)` opens the socket and sends the hello (unless
`hello=False`). A background task reads every frame as it arrives (so the socket is always
drained), answers the server's `ping` frames with `pong` when `auto_pong` is on, and records the
close code when the connection ends. Tests read frames from its queue:

- `next_frame(within)`: the next frame (server pings excluded while `auto_pong` is on);
- `frames_until(predicate, within)`: frames up to and including the first that matches;
- `until_live(within)`: the welcome, the replayed change frames, and the `live` frame;
- `changes(count, within)`: the next `count` change frames (control frames are kept aside);
- `wait_closed(within)`: the close code (every other frame that arrives first is kept).

Every wait is bounded (`within` seconds) and raises `TimeoutError` (or `Closed` when the socket
ended first), with what arrived so far in the message. Nothing here sleeps for a fixed time.

`StalledClient` is a raw socket that says hello and then reads nothing (a slow consumer), until
`drain()` reads whatever the server had sent, to the end of the connection.

`Http` sends, marks read and renames over the REST API with httpx and checks the status.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from sitecomms.protocol.enums import ChangeType
from sitecomms.protocol.frames import ClientFrame, ServerFrame
from sitecomms.protocol.requests import LoginRequest, SendMessageRequest, UpdateUserRequest, body

CHANGE_TYPES = frozenset(t.value for t in ChangeType)
DEFAULT_TIMEOUT = 10.0
HTTP_TIMEOUT = 15.0

Frame = dict[str, Any]
Predicate = Callable[[Frame], bool]


def is_change(frame: Frame) -> bool:
    return frame.get("type") in CHANGE_TYPES


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://", 1).rstrip("/") + "/v1/realtime"


class Closed(AssertionError):
    """The socket closed while a frame was expected."""

    def __init__(self, code: int | None, reason: str, pending: list[Frame]) -> None:
        super().__init__(f"socket closed ({code} {reason!r}) while waiting; frames since: {_short(pending)}")
        self.code, self.reason, self.pending = code, reason, pending


def _short(frames: list[Frame], keep: int = 8) -> str:
    shown = [f"{f.get('type')}@{f.get('position', '-')}" for f in frames[-keep:]]
    return f"{len(frames)} frames, last {shown}"


class RealtimeClient:
    def __init__(self, ws: ClientConnection, *, auto_pong: bool, label: str) -> None:
        self.ws = ws
        self.auto_pong = auto_pong
        self.label = label
        self.welcome: Frame | None = None
        self.live: Frame | None = None
        self.others: list[Frame] = []  # control frames `changes()` stepped over
        self.log: list[Frame] = []  # every frame received, in order (server pings included)
        self.pings = 0  # server `ping` frames received
        self.close_code: int | None = None
        self.close_reason = ""
        self._frames: asyncio.Queue[Frame | None] = asyncio.Queue()  # None: the socket ended
        self._ended = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name=f"realtime-client-{label}")

    @classmethod
    async def connect(
        cls,
        base_url: str,
        token: str | None = None,
        cursor: str | None = None,
        *,
        hello: bool = True,
        auto_pong: bool = True,
        label: str = "",
        within: float = DEFAULT_TIMEOUT,
        **ws_options: Any,
    ) -> RealtimeClient:
        async with asyncio.timeout(within):
            ws = await connect(
                ws_url(base_url),
                proxy=None,
                open_timeout=within,
                close_timeout=2,
                max_size=4 * 1024 * 1024,
                **ws_options,
            )
        client = cls(ws, auto_pong=auto_pong, label=label)
        if hello:
            await client.send({"type": ClientFrame.HELLO, "token": token, "cursor": cursor})
        return client

    # --- receiving -----------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    frame = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    frame = {"type": "<not json>", "raw": raw}  # for the test to see, and fail on
                if not isinstance(frame, dict):
                    frame = {"type": "<not an object>", "raw": raw}
                self.log.append(frame)
                if frame.get("type") == ServerFrame.PING:
                    self.pings += 1
                    if self.auto_pong:
                        with contextlib.suppress(ConnectionClosed):
                            await self.ws.send(orjson.dumps({"type": ClientFrame.PONG}).decode())
                        continue
                self._frames.put_nowait(frame)
        except ConnectionClosed:
            pass
        finally:
            received = self.ws.protocol.close_rcvd
            self.close_code = received.code if received is not None else 1006
            self.close_reason = received.reason if received is not None else ""
            self._ended.set()
            self._frames.put_nowait(None)

    @property
    def closed(self) -> bool:
        return self._ended.is_set()

    async def next_frame(self, within: float = DEFAULT_TIMEOUT) -> Frame:
        try:
            async with asyncio.timeout(within):
                frame = await self._frames.get()
        except TimeoutError:
            raise TimeoutError(f"{self.label}: no frame within {within} s; {_short(self.log)}") from None
        if frame is None:
            self._frames.put_nowait(None)  # stays ended for the next caller
            raise Closed(self.close_code, self.close_reason, [])
        return frame

    async def frames_until(self, predicate: Predicate, within: float = DEFAULT_TIMEOUT) -> list[Frame]:
        """Frames up to and including the first one that matches `predicate`."""
        frames: list[Frame] = []
        deadline = time.monotonic() + within
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.label}: no matching frame within {within} s; {_short(frames)}")
            try:
                frame = await self.next_frame(remaining)
            except Closed as closed:
                raise Closed(closed.code, closed.reason, frames) from None
            except TimeoutError:
                raise TimeoutError(f"{self.label}: no matching frame within {within} s; {_short(frames)}") from None
            frames.append(frame)
            if predicate(frame):
                return frames

    async def until_live(self, within: float = DEFAULT_TIMEOUT) -> list[Frame]:
        """The replay: the change frames between `welcome` and `live` (both checked and kept)."""
        frames = await self.frames_until(lambda f: f.get("type") == ServerFrame.LIVE, within)
        assert frames[0].get("type") == ServerFrame.WELCOME, f"{self.label}: first frame {frames[0]}"
        self.welcome = frames[0]
        between = frames[1:-1]
        assert all(is_change(f) for f in between), [f["type"] for f in between if not is_change(f)]
        self.live = frames[-1]
        return between

    async def changes(self, count: int, within: float = DEFAULT_TIMEOUT) -> list[Frame]:
        """The next `count` change frames; control frames in between are kept in `self.others`."""
        found: list[Frame] = []
        deadline = time.monotonic() + within
        while len(found) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.label}: {len(found)} of {count} changes within {within} s")
            try:
                frame = await self.next_frame(remaining)
            except Closed as closed:
                raise Closed(closed.code, closed.reason, found) from None
            except TimeoutError:
                raise TimeoutError(f"{self.label}: {len(found)} of {count} changes within {within} s") from None
            if is_change(frame):
                found.append(frame)
            else:
                self.others.append(frame)
        return found

    async def wait_closed(self, within: float = DEFAULT_TIMEOUT) -> int | None:
        """The close code once the connection has ended; frames that arrive first stay queued."""
        try:
            async with asyncio.timeout(within):
                await self._ended.wait()
        except TimeoutError:
            raise TimeoutError(f"{self.label}: still open after {within} s; {_short(self.log)}") from None
        return self.close_code

    def drain(self) -> list[Frame]:
        """Every frame already received and not yet read (without waiting)."""
        frames = []
        while not self._frames.empty():
            frame = self._frames.get_nowait()
            if frame is None:
                self._frames.put_nowait(None)
                break
            frames.append(frame)
        return frames

    async def pong(self, within: float = DEFAULT_TIMEOUT) -> list[Frame]:
        """Ping the server and wait for its pong: every frame queued before it is returned."""
        await self.send({"type": ClientFrame.PING})
        frames = await self.frames_until(lambda f: f.get("type") == ServerFrame.PONG, within)
        return frames[:-1]

    # --- sending and closing -------------------------------------------------------------

    async def send(self, frame: Frame | str | bytes, within: float = DEFAULT_TIMEOUT) -> None:
        data: str | bytes = orjson.dumps(frame).decode() if isinstance(frame, dict) else frame
        async with asyncio.timeout(within):
            await self.ws.send(data)

    async def close(self, within: float = 5.0) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(within):
                await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            async with asyncio.timeout(within):
                await self._reader


# --- HTTP ----------------------------------------------------------------------------------


class Http:
    """The REST calls the realtime tests make, each checked for its expected status."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=HTTP_TIMEOUT, trust_env=False)

    async def aclose(self) -> None:
        await self.client.aclose()

    @staticmethod
    def _auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def login(self, email: str, password: str) -> Any:
        response = await self.client.post("/v1/auth/login", json=body(LoginRequest(email, password)))
        assert response.status_code == 200, response.text
        return response.json()

    async def get(self, token: str, path: str, **params: Any) -> Any:
        response = await self.client.get(path, headers=self._auth(token), params=params or None)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    async def send(self, token: str, conversation_id: str, content: str, key: str | None = None) -> Any:
        """POST /v1/messages (a new message: 201); returns the message."""
        request = SendMessageRequest(conversation_id, content, key or uuid.uuid4().hex)
        response = await self.client.post("/v1/messages", json=body(request), headers=self._auth(token))
        assert response.status_code == 201, f"send: {response.status_code} {response.text}"
        return response.json()

    async def mark_read(self, token: str, conversation_id: str) -> Any:
        """POST /v1/conversations/{id}/read up to the newest message; returns the read status."""
        response = await self.client.post(f"/v1/conversations/{conversation_id}/read", headers=self._auth(token))
        assert response.status_code == 200, f"mark read: {response.status_code} {response.text}"
        return response.json()

    async def rename(self, token: str, user_id: str, display_name: str) -> Any:
        response = await self.client.patch(
            f"/v1/users/{user_id}", json=body(UpdateUserRequest(display_name)), headers=self._auth(token)
        )
        assert response.status_code == 200, f"rename: {response.status_code} {response.text}"
        return response.json()

    async def head_cursor(self, token: str) -> str:
        """The stream head as this user's cursor (a snapshot sync's `next_cursor`)."""
        return str((await self.get(token, "/v1/sync"))["next_cursor"])


# --- a client that stops reading -------------------------------------------------------------


class StalledClient:
    """A raw socket that does the upgrade, says hello, reads up to `live` and then nothing until `drain()`.

    Its receive buffer is made small before connecting, so the server's writes back up quickly:
    a client on a dead-slow link, as the server sees it. `drain()` then reads everything the
    server had sent, up to the end of the connection, through websockets' sans-I/O parser.
    """

    def __init__(self, sock: socket.socket, protocol: ClientProtocol) -> None:
        self.sock = sock
        self.protocol = protocol
        self.frames: list[Frame] = []
        self.close_code: int | None = None  # from the server's close frame; None if there was none
        self.close_reason = ""
        self.eof = False

    @classmethod
    async def connect(
        cls, base_url: str, token: str, cursor: str | None = None, *, rcvbuf: int = 4096, within: float = 10.0
    ) -> StalledClient:
        loop = asyncio.get_running_loop()
        uri = parse_uri(ws_url(base_url))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: a small window
        sock.setblocking(False)
        protocol = ClientProtocol(uri, max_size=None)
        try:
            async with asyncio.timeout(within):
                await loop.sock_connect(sock, (uri.host, uri.port))
                protocol.send_request(protocol.connect())
                await loop.sock_sendall(sock, b"".join(protocol.data_to_send()))
                while protocol.state is State.CONNECTING:
                    data = await loop.sock_recv(sock, 65536)
                    if not data:
                        raise ConnectionError("the server closed the connection during the handshake")
                    protocol.receive_data(data)
                if protocol.handshake_exc is not None:
                    raise protocol.handshake_exc
                client = cls(sock, protocol)
                client._collect()
                protocol.send_text(orjson.dumps({"type": ClientFrame.HELLO, "token": token, "cursor": cursor}))
                await loop.sock_sendall(sock, b"".join(protocol.data_to_send()))
                # Read up to `live` only: from then on the server streams to a client that reads
                # nothing (connecting is not what stalls; changes sent before `live` would not
                # be this client's to expect).
                while not any(frame.get("type") == ServerFrame.LIVE for frame in client.frames):
                    data = await loop.sock_recv(sock, 4096)
                    if not data:
                        raise ConnectionError("the server closed the connection before live")
                    protocol.receive_data(data)
                    client._collect()
        except BaseException:
            sock.close()
            raise
        return client

    def _collect(self) -> None:
        for event in self.protocol.events_received():
            if isinstance(event, WsFrame) and event.opcode is Opcode.TEXT:
                self.frames.append(orjson.loads(event.data))
        if self.protocol.close_rcvd is not None:
            self.close_code = self.protocol.close_rcvd.code
            self.close_reason = self.protocol.close_rcvd.reason

    async def drain(self, within: float = DEFAULT_TIMEOUT) -> None:
        """Read until the server ends the connection (answering its close frame, if it sends one)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within):
            while True:
                data = await loop.sock_recv(self.sock, 1 << 20)
                if not data:
                    self.eof = True
                    self.protocol.receive_eof()
                    self._collect()
                    return
                self.protocol.receive_data(data)
                self._collect()
                reply = b"".join(self.protocol.data_to_send())  # pongs, the close handshake
                if reply:
                    with contextlib.suppress(OSError):
                        await loop.sock_sendall(self.sock, reply)

    def close(self) -> None:
        self.sock.close()
