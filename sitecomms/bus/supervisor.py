"""The supervised bus: one listener task that reconnects with backoff, and safe publishing.

encode/broadcaster's listener dies silently when the broker drops; this one does not. The
listener connects (and subscribes), tells the subscriber to `on_reset()` — anything may have
been missed while it was away, so it re-reads every org it serves from its last position —
then hands each notice to `on_notice()`. When the connection fails it closes the backend,
waits with jittered exponential backoff and starts again, forever, until `close()`.

Subscriber callbacks are synchronous and must not block: the hub only records "org O is
dirty up to P" and wakes a reader, so the hand-off is bounded by the number of orgs, not by the
number of notices. `publish()` never raises: a notice that cannot be sent is logged and lost,
which the contract allows (see `base.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from enum import Enum
from typing import Protocol

from sitecomms.bus.base import BusBackend, Notice

log = logging.getLogger("sitecomms.bus")


class BusState(Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class Subscriber(Protocol):
    def on_notice(self, notice: Notice) -> None: ...

    def on_reset(self) -> None: ...


class Bus:
    def __init__(self, backend: BusBackend, *, url: str, min_backoff: float = 0.05, max_backoff: float = 5.0) -> None:
        self.backend = backend
        self.url = url
        self.state = BusState.IDLE
        self.connected = asyncio.Event()
        self.reconnects = 0
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None

    def start(self, subscriber: Subscriber) -> None:
        assert self._task is None, "the bus is already started"
        self._task = asyncio.create_task(self._supervise(subscriber), name="sitecomms-bus-listener")

    async def publish(self, org_id: str, position: int) -> None:
        if not self.connected.is_set():
            log.debug("bus down: notice %s@%d not sent (readers catch up on reconnect)", org_id, position)
            return
        try:
            await self.backend.publish(Notice(org_id, position).encode())
        except Exception as exc:  # the database is the record; a lost notice costs latency only
            log.warning("bus publish failed (%s); listeners will catch up", exc)

    async def close(self) -> None:
        self.state = BusState.CLOSED
        self.connected.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.backend.close()

    async def _supervise(self, subscriber: Subscriber) -> None:
        failures = 0
        while self.state is not BusState.CLOSED:
            self.state = BusState.CONNECTING if failures == 0 else BusState.RECONNECTING
            try:
                await self.backend.connect()
                self.state = BusState.CONNECTED
                self.connected.set()
                if failures:
                    self.reconnects += 1
                    log.info("bus %s reconnected after %d failed attempt(s)", self.url, failures)
                failures = 0
                subscriber.on_reset()
                async for payload in self.backend.listen():
                    notice = Notice.decode(payload)
                    if notice is None:
                        log.warning("bus: dropping malformed notice %r", payload[:100])
                        continue
                    subscriber.on_notice(notice)
                raise ConnectionError("the bus listener stopped")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                failures += 1
                delay = min(self._max_backoff, self._min_backoff * 2 ** min(failures - 1, 10))
                delay *= random.uniform(0.5, 1.0)
                log.warning("bus %s lost (%s); reconnecting in %.2fs", self.url, exc, delay)
                with contextlib.suppress(Exception):
                    await self.backend.close()
                await asyncio.sleep(delay)
