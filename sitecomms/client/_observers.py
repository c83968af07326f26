"""Observers for UIs: async iterators that yield fresh state after each local change.

Each watcher holds one `asyncio.Event`; a change sets the events of the watchers it concerns
and the watcher re-reads the local store once, however many changes happened meanwhile. So a
slow UI sees the latest state, never a growing backlog.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

ALL = "*"


class Observers:
    def __init__(self) -> None:
        self._watchers: dict[asyncio.Event, str] = {}

    def changed(self, conversation_ids: set[str]) -> None:
        for event, topic in self._watchers.items():
            if topic == ALL or topic in conversation_ids:
                event.set()

    async def watch(self, topic: str, read: Callable[[], Awaitable[T]]) -> AsyncIterator[T]:
        """Yield `read()` now, then again after every change to `topic` (a conversation id, or ALL)."""
        event = asyncio.Event()
        self._watchers[event] = topic
        try:
            while True:
                event.clear()
                yield await read()
                await event.wait()
        finally:
            self._watchers.pop(event, None)
