"""The load generator's clients: raw HTTP/1.1 keep-alive over asyncio streams, and realtime receivers.

Cheap per request on purpose (no client library per request): the generator must not be the
bottleneck it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sitecomms.protocol.enums import ChangeType
from sitecomms.protocol.frames import ClientFrame, ServerFrame

# The frame types the receivers compare, as plain strings once (no Enum lookup per frame)
_MESSAGE_CREATED: str = ChangeType.MESSAGE_CREATED.value
_PING: str = ServerFrame.PING.value
_LIVE: str = ServerFrame.LIVE.value
_REFUSED: tuple[str, ...] = (ServerFrame.RESYNC.value, ServerFrame.ERROR.value)
_PONG = orjson.dumps({"type": ClientFrame.PONG.value}).decode()

HTTP_TIMEOUT = 30.0

T = TypeVar("T")


class HttpError(RuntimeError):
    pass


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        payload = b"" if body is None else orjson.dumps(body)
        head = f"{method} {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-length: {len(payload)}\r\n"
        if body is not None:
            head += "content-type: application/json\r\n"
        if token is not None:
            head += f"authorization: Bearer {token}\r\n"
        self.writer.write(head.encode() + b"\r\n" + payload)
        try:
            response_head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise HttpError("connection closed by the server") from exc
        status_line, *header_lines = response_head[:-4].split(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        chunked = False
        for line in header_lines:
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-length":
                length = int(value.strip())
            elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            data = bytearray()
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                data += chunk[:-2]
            raw = bytes(data)
        else:
            raw = await self.reader.readexactly(length) if length else b""
        return status, (orjson.loads(raw) if raw else None)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class HttpPool:
    """Keep-alive connections handed out one request at a time, opened on demand up to `limit`."""

    def __init__(self, host: str, port: int, limit: int = 256) -> None:
        self.host, self.port = host, port
        self._idle: list[HttpConnection] = []
        self._slots = asyncio.Semaphore(limit)
        self.opened = 0
        self.retried = 0  # requests resent after the server closed an idle connection

    async def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        async with self._slots:
            while True:
                reused = bool(self._idle)
                conn = self._idle.pop() if reused else await self._open()
                try:
                    async with asyncio.timeout(HTTP_TIMEOUT):  # cheaper than wait_for: no task per request
                        result = await conn.request(method, path, body, token)
                except (HttpError, ConnectionError, asyncio.IncompleteReadError):
                    await conn.close()
                    if reused:  # the server closed an idle keep-alive connection: retry on a new one
                        self.retried += 1
                        continue
                    raise
                except BaseException:
                    await conn.close()
                    raise
                self._idle.append(conn)
                return result

    async def _open(self) -> HttpConnection:
        self.opened += 1
        return await HttpConnection.open(self.host, self.port)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


@dataclass
class Receipts:
    """When each message (by idempotency key) reached each receiver: the shared record of a run."""

    times: dict[tuple[str, str], float] = field(default_factory=dict)  # (receiver, key) -> first arrival
    duplicates: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    waiters: dict[str, asyncio.Event] = field(default_factory=dict)

    def record(self, receiver: str, key: str, at: float) -> None:
        slot = (receiver, key)
        if slot in self.times:
            self.duplicates[slot] += 1
        else:
            self.times[slot] = at


class Receiver:
    """One realtime socket of one user: records every message.created by idempotency key; keeps its cursor."""

    def __init__(self, ws_url: str, name: str, token: str, receipts: Receipts) -> None:
        self.ws_url, self.name, self.token, self.receipts = ws_url, name, token, receipts
        self.cursor: str | None = None
        self.ws: ClientConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.live = asyncio.Event()
        self.closed_code: int | None = None
        self.count = 0  # messages received on this socket (to wait for a catch-up)
        self.count_changed = asyncio.Event()

    async def connect(self, cursor: str | None = None) -> None:
        self.live = asyncio.Event()
        self.ws = await connect(self.ws_url, max_size=None, compression=None, open_timeout=60, ping_interval=None)
        hello = {"type": ClientFrame.HELLO.value, "token": self.token, "cursor": cursor}
        await self.ws.send(orjson.dumps(hello).decode())
        self.task = asyncio.create_task(self._read(self.ws))

    async def _read(self, ws: ClientConnection) -> None:
        clock = time.perf_counter
        loads = orjson.loads
        message_created, ping, live, refused = _MESSAGE_CREATED, _PING, _LIVE, _REFUSED
        try:
            async for raw in ws:
                at = clock()
                frame = loads(raw)
                kind = frame.get("type")
                if kind == message_created:
                    self.receipts.record(self.name, frame["data"]["idempotency_key"], at)
                    self.count += 1
                    self.count_changed.set()
                elif kind == ping:
                    await ws.send(_PONG)
                    continue
                elif kind == live:
                    self.live.set()
                elif kind in refused:
                    raise RuntimeError(f"{self.name}: unexpected frame {frame}")
                cursor = frame.get("cursor")
                if cursor is not None:
                    self.cursor = cursor
        except ConnectionClosed as exc:
            self.closed_code = exc.rcvd.code if exc.rcvd else None

    async def wait_count(self, count: int, within: float) -> bool:
        deadline = time.perf_counter() + within
        while self.count < count:
            self.count_changed.clear()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.count_changed.wait(), remaining)
        return True

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 10)
        self.ws = None
        self.task = None


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc/<pid>/stat (Linux)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def process_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# --- the load generator's own processes ------------------------------------------------------


def own_cpu_seconds() -> float:
    """User + system CPU of this process so far."""
    times = os.times()
    return times.user + times.system


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a load-generator process's main coroutine, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


def quiet_gc() -> None:
    """Keep the load generator's own collector pauses out of the latencies it measures: collect
    now, move what survives out of the collector's reach, and collect the youngest generation
    less often (the receipts of a run are hundreds of thousands of long-lived objects)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
