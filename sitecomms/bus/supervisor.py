"""The supervised bus: one listener task that reconnects with backoff, and safe publishing.

encode/broadcaster's listener dies silently when the broker drops; this one does not. The
listener connects (and subscribes), tells the subscriber to `on_reset()` — anything may have
been missed while it was away, so it re-reads every org it serves from its last position —
then hands each notice to `on_notice()`. When the connection fails it closes the backend,
waits with jittered exponential backoff and starts again, forever, until `close()`.

Subscriber callbacks are synchronous and must not block: the hub only records "org O is
dirty up to P" and wakes a reader, so the hand-off is bounded by the number of orgs, not by the
number of notices. `publish()` never raises and never blocks for long (it gives up after
`publish_timeout`): a notice that cannot be sent is logged, which the contract allows (see
`base.py`). It is not forgotten, though: the newest unsent position of each org is kept (one entry
per org, so bounded) and published as soon as the bus is connected again. Otherwise a notice
lost while the broker was away would leave other processes' sockets behind until the org's
next write, however long that takes.

Each notice says when its change was first published (an unsent one keeps the time of its
first try), and `on_lag`, when set, is told how long each took to arrive here (the metrics'
notice lag, by the clocks of the two processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable
from enum import Enum
from typing import Protocol

from sitecomms.bus.base import ACCESS_NOTICE, BusBackend, Notice, is_access_notice
from sitecomms.protocol import backoff
from sitecomms.redact import redact_url, scrub

log = logging.getLogger("sitecomms.bus")

_CLOSE_TIMEOUT = 5.0


class BusState(Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class Subscriber(Protocol):
    def on_notice(self, notice: Notice) -> None: ...

    def on_reset(self) -> None: ...

    def on_access_changed(self) -> None: ...


class Bus:
    def __init__(
        self,
        backend: BusBackend,
        *,
        url: str,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
        publish_timeout: float = 2.0,
    ) -> None:
        self.backend = backend
        self.url = redact_url(url)  # as logged and shown: never the password
        self._secret_url = url  # only to scrub its secrets from the failures logged
        self.state = BusState.IDLE
        self.connected = asyncio.Event()
        self.reconnects = 0
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._publish_timeout = publish_timeout
        self._unsent: dict[str, tuple[int, int]] = {}  # org -> (newest position not published yet, first tried ms)
        self.on_lag: Callable[[float], None] | None = None  # seconds from a notice's publication to here
        self._access_unsent = False  # an access notice is owed
        self._task: asyncio.Task[None] | None = None
        self._retry_task: asyncio.Task[None] | None = None

    def _scrubbed(self, failure: str) -> str:
        """A failure as logged: a driver's message may quote the URL it was given, password included."""
        return scrub(failure, self._secret_url)

    def start(self, subscriber: Subscriber) -> None:
        assert self._task is None, "the bus is already started"
        self._task = asyncio.create_task(self._supervise(subscriber), name="sitecomms-bus-listener")

    async def publish(self, org_id: str, position: int) -> None:
        self._keep_unsent(org_id, position)
        if self.connected.is_set():
            await self._publish_unsent()
        else:
            log.debug("bus down: notice %s@%d is sent once it is back", org_id, position)

    async def access_changed(self) -> None:
        self._access_unsent = True
        if self.connected.is_set():
            await self._publish_unsent()

    def _keep_unsent(self, org_id: str, position: int, published_ms: int | None = None) -> None:
        now_ms = published_ms if published_ms is not None else time.time_ns() // 1_000_000
        kept = self._unsent.get(org_id)
        self._unsent[org_id] = (position, now_ms) if kept is None else (max(position, kept[0]), min(now_ms, kept[1]))

    async def _publish_unsent(self) -> None:
        if self._access_unsent:
            self._access_unsent = False
            try:
                async with asyncio.timeout(self._publish_timeout):
                    await self.backend.publish(ACCESS_NOTICE)
            except Exception as exc:  # every process also polls the access-change log
                log.warning("bus publish failed (%s); the notice is sent again shortly", self._scrubbed(repr(exc)))
                self._access_unsent = True
                self._retry_unsent_soon()
                return
        unsent, self._unsent = self._unsent, {}
        pending = list(unsent.items())
        for index, (org_id, (position, published_ms)) in enumerate(pending):
            try:
                async with asyncio.timeout(self._publish_timeout):
                    await self.backend.publish(Notice(org_id, position, published_ms).encode())
            except Exception as exc:  # the database is the record; a late notice costs latency only
                log.warning("bus publish failed (%s); the notice is sent again shortly", self._scrubbed(repr(exc)))
                for org, (pos, ms) in pending[index:]:  # one failure is enough: a caller waits one timeout at most
                    self._keep_unsent(org, pos, ms)
                self._retry_unsent_soon()
                return

    def _retry_unsent_soon(self) -> None:
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.create_task(  # started by a request's publish, it is no part of it
                self._retry_unsent(), name="sitecomms-bus-retry", context=contextvars.Context()
            )

    async def _retry_unsent(self) -> None:
        attempt = 0
        while (
            self._unsent or self._access_unsent
        ) and self.connected.is_set():  # when disconnected, the reconnect sends them
            await asyncio.sleep(backoff.delay(attempt, self._min_backoff, self._max_backoff))
            if self.connected.is_set():
                await self._publish_unsent()
            attempt += 1

    async def close(self) -> None:
        self.state = BusState.CLOSED
        self.connected.clear()
        for task in (self._task, self._retry_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._close_backend()

    async def _close_backend(self) -> None:
        with contextlib.suppress(Exception):  # bounded: closing a connection to a hung broker may hang too
            async with asyncio.timeout(_CLOSE_TIMEOUT):
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
                await self._publish_unsent()
                async for payload in self.backend.listen():
                    if is_access_notice(payload):
                        subscriber.on_access_changed()
                        continue
                    notice = Notice.decode(payload)
                    if notice is None:
                        log.warning("bus: dropping malformed notice %r", payload[:100])
                        continue
                    if notice.published_ms is not None and self.on_lag is not None:
                        self.on_lag(max(0.0, time.time() - notice.published_ms / 1000))
                    subscriber.on_notice(notice)
                raise ConnectionError("the bus listener stopped")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                failures += 1
                delay = backoff.delay(failures - 1, self._min_backoff, self._max_backoff)
                log.warning("bus %s lost (%s); reconnecting in %.2fs", self.url, self._scrubbed(str(exc)), delay)
                await self._close_backend()
                await asyncio.sleep(delay)
