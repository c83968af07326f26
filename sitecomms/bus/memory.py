"""`memory://`: one process, no broker. Publishing hands the payload to the listener directly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

_CAPACITY = 10_000


class MemoryBackend:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue(_CAPACITY)

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, payload: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a lost notice is repaired by a later one
            self._queue.put_nowait(payload)

    async def listen(self) -> AsyncIterator[str]:
        while True:
            yield await self._queue.get()
