"""`postgres://`: PostgreSQL LISTEN/NOTIFY; no infrastructure beyond the database.

Two connections: one LISTENs, one NOTIFYs. Losing either one is a failure of the backend: it
reaches `listen()`, so the supervisor reconnects both and every subscriber resyncs. (A dead
publishing connection that nobody noticed would lose every later notice of this process.)
The driver, asyncpg, comes with the `server` extra; it is imported when a backend is built.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sitecomms.bus.base import CHANNEL
from sitecomms.extras import require

_CONNECT_TIMEOUT = 5.0


class PostgresBackend:
    def __init__(self, url: str, *, heartbeat_seconds: float = 10.0) -> None:
        self._asyncpg: Any = require("asyncpg", "the postgres:// bus")
        self._dsn = url.replace("postgresql+asyncpg://", "postgresql://").replace("postgres://", "postgresql://", 1)
        self._heartbeat = heartbeat_seconds
        self._listen_conn: Any = None
        self._publish_conn: Any = None
        self._publish_lock = asyncio.Lock()
        self._inbox: asyncio.Queue[str | BaseException] = asyncio.Queue(10_000)

    async def connect(self) -> None:
        self._listen_conn = await self._asyncpg.connect(self._dsn, timeout=_CONNECT_TIMEOUT)
        self._publish_conn = await self._asyncpg.connect(self._dsn, timeout=_CONNECT_TIMEOUT)
        self._listen_conn.add_termination_listener(self._on_terminated)
        self._publish_conn.add_termination_listener(self._on_terminated)
        async with asyncio.timeout(_CONNECT_TIMEOUT):
            await self._listen_conn.add_listener(CHANNEL, self._on_notify)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # lost notices are allowed by the contract
            self._inbox.put_nowait(payload)

    def _on_terminated(self, conn: Any) -> None:
        which = "listener" if conn is self._listen_conn else "publisher"
        self._fail(ConnectionError(f"PostgreSQL {which} connection closed"))

    def _fail(self, exc: BaseException) -> None:
        while True:  # make room: the failure must reach listen() even if notices piled up
            try:
                self._inbox.put_nowait(exc)
                return
            except asyncio.QueueFull:
                self._inbox.get_nowait()

    async def close(self) -> None:
        for conn in (self._listen_conn, self._publish_conn):
            if conn is not None and not conn.is_closed():
                conn.remove_termination_listener(self._on_terminated)
                conn.terminate()
        self._listen_conn = self._publish_conn = None
        self._inbox = asyncio.Queue(10_000)

    async def publish(self, payload: str) -> None:
        conn = self._publish_conn
        assert conn is not None, "connect() first"
        try:
            async with self._publish_lock:
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        except (Exception, asyncio.CancelledError) as exc:  # cancelled: the caller's timeout, a stuck connection
            if conn is self._publish_conn:  # not a publish on connections already replaced
                self._fail(ConnectionError(f"PostgreSQL publish failed: {exc!r}"))
            raise

    async def listen(self) -> AsyncIterator[str]:
        """Yield payloads; after a quiet heartbeat, prove the listening connection alive with a query.

        Without the probe a connection that died without a FIN (a NAT or firewall dropping it, a
        frozen host) would leave the listener waiting forever, deaf to every notice.
        """
        while True:
            try:
                # Not asyncio.wait_for: on Python 3.11 it loses a cancellation that arrives as the
                # item does (a notice of our own publish while the bus closes), and the listener
                # task then never ends: `sitecomms user deactivate` hung at exit.
                async with asyncio.timeout(self._heartbeat):
                    item = await self._inbox.get()
            except TimeoutError:
                conn = self._listen_conn
                assert conn is not None, "connect() first"
                try:
                    async with asyncio.timeout(self._heartbeat):
                        await conn.execute("SELECT 1")
                except TimeoutError:
                    raise ConnectionError(f"PostgreSQL listener did not answer within {self._heartbeat:g}s") from None
                continue
            if isinstance(item, BaseException):
                raise item
            yield item
