"""`Follower`: one user's realtime socket that keeps following the stream when it drops.

`Follower(label, user, urls, cursor)` connects to the first of `urls` that answers (a dead server
is skipped; a balancer test passes its one URL), takes the replay up to `live`, and then reads
every frame in a background task. When the socket closes it connects again with the last cursor
it received, to the first URL that answers; after a round in which none did it waits
`RECONNECT.delay(round)`, for at most `CONNECT_ATTEMPTS` attempts. It keeps every change frame in
arrival order and never deduplicates, so `check_stream` sees a duplicate or a reordering, and it
records where each connection went (`connected_to`), how many messages each one brought
(`per_connection`), how each one ended (`close_codes`) and every failed attempt
(`connect_failures`). `until` waits for a condition on it, bounded, and fails at once if the
follow task has died.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Generic, Protocol, Self, TypeVar

from websockets.exceptions import ConnectionClosed, InvalidHandshake

from sitecomms.protocol.backoff import Backoff
from sitecomms.protocol.enums import ChangeType
from sitecomms.protocol.frames import ServerFrame
from tests.realtime_client import Closed, Frame, RealtimeClient, is_change

CONNECT_WAIT = 5.0  # seconds for the socket to open
LIVE_WAIT = 15.0  # seconds for the replay up to `live`, and the idle read between frames
DELIVERY_WAIT = 30.0  # `until`'s bound unless told
RECONNECT = Backoff(base=0.05, cap=1.0)  # quicker than the SDK's policy: the tests are short
CONNECT_ATTEMPTS = 20  # per (re)connection, over all the URLs


class HasToken(Protocol):
    @property
    def token(self) -> str: ...


U = TypeVar("U", bound=HasToken)


@dataclass
class Follower(Generic[U]):
    """A user's realtime socket, resumed from its last cursor on the first of `urls` that answers."""

    label: str
    user: U
    urls: list[str]  # where to connect, in order of preference; a dead one is skipped
    cursor: str | None = None
    changes: list[Frame] = field(default_factory=list)
    connected_to: list[str] = field(default_factory=list)  # one URL per successful connection
    per_connection: list[int] = field(default_factory=list)  # messages received on each connection
    close_codes: list[int | None] = field(default_factory=list)
    connect_failures: list[str] = field(default_factory=list)
    unexpected: list[Frame] = field(default_factory=list)  # error / resync frames
    _client: RealtimeClient | None = None
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> Self:
        await self._connect()
        self._task = asyncio.create_task(self._follow(), name=f"follower-{self.label}")
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
    def connections(self) -> int:
        return len(self.connected_to)

    @property
    def reconnects(self) -> int:
        return max(self.connections - 1, 0)

    def _take(self, frame: Frame) -> None:
        if is_change(frame):
            self.changes.append(frame)
            self.cursor = frame["cursor"]
            if frame["type"] == ChangeType.MESSAGE_CREATED:
                self.per_connection[-1] += 1
        elif frame.get("type") == ServerFrame.LIVE:
            self.cursor = frame["cursor"]
        elif frame.get("type") in (ServerFrame.ERROR, ServerFrame.RESYNC):
            self.unexpected.append(frame)
        self._changed.set()

    async def _connect(self) -> None:
        """Connect to the first URL that answers and take its replay (bounded attempts)."""
        for attempt in range(CONNECT_ATTEMPTS):
            url = self.urls[attempt % len(self.urls)]
            client: RealtimeClient | None = None
            try:
                client = await RealtimeClient.connect(
                    url, self.user.token, self.cursor, label=self.label, within=CONNECT_WAIT
                )
                replay = await client.until_live(within=LIVE_WAIT)
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, Closed) as exc:
                self.connect_failures.append(f"{url}: {exc!r}")
                if client is not None:
                    await client.close()
                if (attempt + 1) % len(self.urls) == 0:  # every URL failed this round
                    await asyncio.sleep(RECONNECT.delay(attempt // len(self.urls)))
                continue
            assert client.live is not None
            self._client = client
            self.connected_to.append(url)
            self.per_connection.append(0)
            for frame in [*replay, client.live]:
                self._take(frame)
            return
        raise AssertionError(f"{self.label}: could not reconnect anywhere: {self.connect_failures[-3:]}")

    async def _follow(self) -> None:
        try:
            while True:
                client = self._client
                assert client is not None
                try:
                    while True:
                        with contextlib.suppress(TimeoutError):  # quiet is fine: the test bounds its waits
                            self._take(await client.next_frame(within=LIVE_WAIT))
                except Closed:
                    self.close_codes.append(client.close_code)
                await client.close()
                self._client = None
                await self._connect()
        finally:
            self._changed.set()  # a waiter sees the task ended

    async def until(self, condition: Callable[[Self], bool], what: str, within: float = DELIVERY_WAIT) -> None:
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
                f" connected to {self.connected_to}, closes {self.close_codes}"
            ) from None

    async def until_messages(self, ids: Collection[str], within: float = DELIVERY_WAIT) -> None:
        wanted = frozenset(ids)
        await self.until(lambda f: wanted <= set(f.message_ids), f"{len(wanted)} messages", within)

    def check_stream(self) -> None:
        """Positions strictly increase across every reconnect: nothing twice, nothing out of order."""
        positions = [f["position"] for f in self.changes]
        repeated = sorted(p for p, n in Counter(positions).items() if n > 1)
        assert not repeated, f"{self.label}: positions received more than once: {repeated}"
        backwards = [(a, b) for a, b in itertools.pairwise(positions) if b <= a]
        assert not backwards, f"{self.label}: positions out of order: {backwards[:5]}"
        ids = self.message_ids
        assert len(ids) == len(set(ids)), f"{self.label}: a message was delivered twice"
        assert not self.unexpected, f"{self.label}: unexpected frames {self.unexpected}"
