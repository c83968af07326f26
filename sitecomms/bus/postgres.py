"""`postgres://`: PostgreSQL LISTEN/NOTIFY; no infrastructure beyond the database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sitecomms.bus.base import CHANNEL


class PostgresBackend:
    def __init__(self, url: str) -> None:
        self._dsn = url.replace("postgresql+asyncpg://", "postgresql://").replace("postgres://", "postgresql://", 1)
        self._listen_conn: Any = None
        self._publish_conn: Any = None
        self._publish_lock = asyncio.Lock()
        self._inbox: asyncio.Queue[str | BaseException] = asyncio.Queue(10_000)

    async def connect(self) -> None:
        import asyncpg  # optional dependency, loaded only when used

        self._listen_conn = await asyncpg.connect(self._dsn, timeout=5)
        self._publish_conn = await asyncpg.connect(self._dsn, timeout=5)
        self._listen_conn.add_termination_listener(self._on_terminated)
        await self._listen_conn.add_listener(CHANNEL, self._on_notify)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # lost notices are allowed by the contract
            self._inbox.put_nowait(payload)

    def _on_terminated(self, _conn: Any) -> None:
        while True:  # make room: the failure must reach listen() even if notices piled up
            try:
                self._inbox.put_nowait(ConnectionError("PostgreSQL listener connection closed"))
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
        assert self._publish_conn is not None, "connect() first"
        async with self._publish_lock:
            await self._publish_conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)

    async def listen(self) -> AsyncIterator[str]:
        while True:
            item = await self._inbox.get()
            if isinstance(item, BaseException):
                raise item
            yield item
