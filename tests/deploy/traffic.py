"""Clients that keep going through a failover: senders that retry a send with its idempotency key,
and receivers that reconnect from their cursor.

- `send_until_acked` posts one message and, on a 502/503/504 or a transport error, posts it again
  with the same key (backing off, bounded) until the server acknowledges it: 201, or 200 when an
  earlier attempt had committed. `Sends` records every acknowledgement and every failed attempt.
- `Receiver` follows the realtime stream of one user at one URL; when the socket drops it
  connects again with the last cursor it received. It keeps every change frame in arrival
  order and never deduplicates, so `check_stream` sees a duplicate or a reordering.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from sitecomms.protocol.backoff import Backoff
from sitecomms.protocol.enums import ChangeType, Role
from sitecomms.protocol.frames import ServerFrame
from tests.realtime_client import Closed, Frame, RealtimeClient, is_change

WAIT = 15.0  # seconds for any one thing to happen
RETRY = Backoff(base=0.05, cap=1.0)  # quicker than the SDK's policy: the test is short
SEND_ATTEMPTS = 20  # per message; the backoff's sum stays well under a minute
CONNECT_ATTEMPTS = 20  # per reconnection
RETRYABLE = frozenset({502, 503, 504})  # the balancer's answers when no backend could answer


@dataclass
class User:
    id: str
    email: str
    role: Role
    token: str
    conversation_id: str | None = None  # a medic's direct conversation

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Sends:
    acked: dict[int, dict[str, Any]] = field(default_factory=dict)  # message number -> the message
    statuses: Counter[int] = field(default_factory=Counter)  # the acknowledging status: 201 or 200
    failures: Counter[str] = field(default_factory=Counter)  # failed attempts, by status or error
    attempts: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def until(self, count: int, within: float = WAIT) -> None:
        try:
            async with asyncio.timeout(within):
                while len(self.acked) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{len(self.acked)} of {count} sends acknowledged within {within} s; failures {dict(self.failures)}"
            ) from None


async def send_until_acked(
    http: httpx.AsyncClient, user: User, conversation_id: str, number: int, sends: Sends
) -> dict[str, Any]:
    """Message `number`, sent again with the same idempotency key until it is acknowledged."""
    body = {"conversation_id": conversation_id, "content": f"m{number}", "idempotency_key": uuid.uuid4().hex}
    for attempt in range(SEND_ATTEMPTS):
        sends.attempts += 1
        try:
            response = await http.post("/v1/messages", json=body, headers=user.auth())
        except httpx.TransportError as exc:
            failure = type(exc).__name__
        else:
            if response.status_code in (200, 201):
                # 200: the key was known, which only a retry can find
                assert response.status_code == 201 or attempt > 0, f"m{number}: 200 on a first attempt"
                message: dict[str, Any] = response.json()
                assert message["content"] == body["content"], (number, message)
                sends.acked[number] = message
                sends.statuses[response.status_code] += 1
                sends._changed.set()
                return message
            if response.status_code not in RETRYABLE:
                raise AssertionError(f"send m{number}: {response.status_code} {response.text}")
            failure = str(response.status_code)
        sends.failures[failure] += 1
        await asyncio.sleep(RETRY.delay(attempt))
    raise AssertionError(f"m{number} was not acknowledged in {SEND_ATTEMPTS} attempts: {dict(sends.failures)}")


@dataclass
class Receiver:
    """One user's realtime socket through `base_url`, resumed from its cursor whenever it drops."""

    label: str
    user: User
    base_url: str
    cursor: str | None
    changes: list[Frame] = field(default_factory=list)
    connections: int = 0
    close_codes: list[int | None] = field(default_factory=list)
    connect_failures: list[str] = field(default_factory=list)
    unexpected: list[Frame] = field(default_factory=list)  # error / resync frames
    _client: RealtimeClient | None = None
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> Receiver:
        await self._connect()
        self._task = asyncio.create_task(self._follow(), name=f"receiver-{self.label}")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.close()

    @property
    def message_ids(self) -> list[str]:
        return [f["data"]["id"] for f in self.changes if f["type"] == ChangeType.MESSAGE_CREATED]

    @property
    def reconnects(self) -> int:
        return max(self.connections - 1, 0)

    def _take(self, frame: Frame) -> None:
        if is_change(frame):
            self.changes.append(frame)
            self.cursor = frame["cursor"]
        elif frame.get("type") == ServerFrame.LIVE:
            self.cursor = frame["cursor"]
        elif frame.get("type") in (ServerFrame.ERROR, ServerFrame.RESYNC):
            self.unexpected.append(frame)
        self._changed.set()

    async def _connect(self) -> None:
        for attempt in range(CONNECT_ATTEMPTS):
            client: RealtimeClient | None = None
            try:
                client = await RealtimeClient.connect(
                    self.base_url, self.user.token, self.cursor, label=self.label, within=5
                )
                for frame in await client.until_live(within=WAIT):
                    self._take(frame)
                assert client.live is not None
                self._take(client.live)
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, Closed) as exc:
                self.connect_failures.append(repr(exc))
                if client is not None:
                    await client.close()
                await asyncio.sleep(RETRY.delay(attempt))
                continue
            self._client = client
            self.connections += 1
            return
        raise AssertionError(f"{self.label}: could not reconnect: {self.connect_failures[-3:]}")

    async def _follow(self) -> None:
        try:
            while True:
                client = self._client
                assert client is not None
                try:
                    while True:
                        with contextlib.suppress(TimeoutError):  # quiet is fine: the test bounds its waits
                            self._take(await client.next_frame(within=WAIT))
                except Closed:
                    self.close_codes.append(client.close_code)
                await client.close()
                self._client = None
                await self._connect()
        finally:
            self._changed.set()  # a waiter sees the task ended

    async def until(self, condition: Callable[[Receiver], bool], what: str, within: float) -> None:
        try:
            async with asyncio.timeout(within):
                while not condition(self):
                    if self._task is not None and self._task.done():
                        self._task.result()  # its failure, if any
                        raise AssertionError(f"{self.label}: stopped following")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.label}: timed out waiting for {what}; {len(self.message_ids)} messages,"
                f" {self.connections} connections, closes {self.close_codes}"
            ) from None

    async def until_messages(self, ids: Collection[str], within: float) -> None:
        wanted = frozenset(ids)
        await self.until(lambda r: wanted <= set(r.message_ids), f"{len(wanted)} messages", within)

    def check_stream(self) -> None:
        """Positions strictly increase across every reconnect: nothing twice, nothing out of order."""
        positions = [f["position"] for f in self.changes]
        backwards = [(a, b) for a, b in itertools.pairwise(positions) if b <= a]
        assert not backwards, f"{self.label}: positions repeated or out of order: {backwards[:5]}"
        assert not self.unexpected, f"{self.label}: unexpected frames {self.unexpected}"
