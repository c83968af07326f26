"""The bus backends against the real brokers: memory, Redis pub/sub, PostgreSQL LISTEN/NOTIFY.

Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432) are mandatory: a test fails, never skips,
when they are unreachable. Other test runs may share both brokers and the bus channel, so every
test uses an org id of its own and ignores notices for other orgs; connections are named
(`client_name` / `application_name`) so that a test kills only its own.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
import pytest
import redis.asyncio as aioredis

from sitecomms.bus import Bus, BusState, Notice, open_bus
from tests.bus.proxy import Proxy
from tests.support import POSTGRES_ADMIN_URL

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_URL = POSTGRES_ADMIN_URL.replace("postgresql://", "postgres://", 1)
URLS = {"memory": "memory://", "redis": REDIS_URL, "postgres": POSTGRES_URL}
SHARED = ["redis", "postgres"]  # the backends several processes can share
WAIT = 10.0  # seconds for anything the tests wait for


def named(kind: str, name: str, *, host: str = "127.0.0.1", port: int | None = None) -> str:
    """The broker URL for `kind`, with connections named `name` (and maybe another address)."""
    if kind == "redis":
        return f"redis://{host}:{port or 6379}/0?client_name={name}"
    return f"postgres://postgres@{host}:{port or 5432}/postgres?application_name={name}"


class Recorder:
    """A bus subscriber that records one org's notices and every reset."""

    def __init__(self, org_id: str) -> None:
        self.org_id = org_id
        self.positions: list[int] = []
        self.resets = 0
        self.foreign = 0  # notices for other orgs (other tests and runs share the brokers)
        self._changed = asyncio.Event()

    def on_notice(self, notice: Notice) -> None:
        if notice.org_id == self.org_id:
            self.positions.append(notice.position)
        else:
            self.foreign += 1
        self._changed.set()

    def on_reset(self) -> None:
        self.resets += 1
        self._changed.set()

    async def until(self, condition: Callable[[], bool], what: str, within: float = WAIT) -> None:
        try:
            async with asyncio.timeout(within):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"timed out waiting for {what}: positions={self.positions} resets={self.resets}"
            ) from None


async def until_state(bus: Bus, condition: Callable[[Bus], bool], what: str, within: float = WAIT) -> None:
    """Poll the bus state (it has no event for every state), bounded."""
    deadline = time.monotonic() + within
    while not condition(bus):
        assert time.monotonic() < deadline, f"timed out waiting for {what}: state={bus.state}"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def started(url: str, org_id: str, **options: float) -> AsyncIterator[tuple[Bus, Recorder]]:
    bus = open_bus(url, **options)
    recorder = Recorder(org_id)
    bus.start(recorder)
    try:
        yield bus, recorder
    finally:
        async with asyncio.timeout(WAIT):
            await bus.close()
    assert bus.state is BusState.CLOSED


async def connected(bus: Bus) -> None:
    try:
        async with asyncio.timeout(WAIT):
            await bus.connected.wait()
    except TimeoutError:
        raise AssertionError(f"the bus {bus.url} did not connect: state={bus.state}") from None


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def org() -> str:
    return f"org-{uuid.uuid4().hex}"


# --- killing one's own broker connections --------------------------------------------------


async def kill_redis_clients(name: str, client_type: str) -> int:
    """`CLIENT KILL` this test's Redis connections of one type (pubsub / normal)."""
    admin = aioredis.Redis.from_url(REDIS_URL)
    try:
        clients = await admin.client_list(_type=client_type)
        ids = [c["id"] for c in clients if c.get("name") == name]
        for client_id in ids:
            await admin.client_kill_filter(_id=client_id)
        return len(ids)
    finally:
        await admin.aclose()


async def kill_postgres_backends(name: str, query_pattern: str) -> int:
    """`pg_terminate_backend` this test's PostgreSQL connections whose last query matches."""
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=WAIT)
    try:
        rows = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = $1 AND query ILIKE $2 AND pid <> pg_backend_pid()",
            name,
            query_pattern,
        )
        return sum(1 for row in rows if row[0])
    finally:
        await admin.close()


# --- notices --------------------------------------------------------------------------------


def test_notice_round_trip() -> None:
    notice = Notice("0b7c5e1e-3a1f-4c55-9b8e-2f7a8f0c2d11", 12345)
    assert Notice.decode(notice.encode()) == notice
    assert Notice.decode(notice.encode().encode()) == notice
    assert Notice.decode(Notice("o", 0).encode()) == Notice("o", 0)
    assert len(Notice("0b7c5e1e-3a1f-4c55-9b8e-2f7a8f0c2d11", 2**63 - 1, 2**63 - 1).encode()) < 100  # far below 8,000
    stamped = Notice("o", 7, 1_796_000_000_123)  # when it was published, for the lag metric
    assert stamped.encode() == "o 7 1796000000123" and Notice.decode(stamped.encode()) == stamped
    assert Notice.decode("o 7") == Notice("o", 7, None)  # as versions before the time sent it


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "org",
        "org ",
        " 5",  # no org
        "org 5 6 7",
        "org 5 -6",
        "org 5 ",
        "org -1",
        "org 1.5",
        "org five",
        "org ²",  # str.isdigit() says yes, int() says no
        "org ١٢",  # non-ASCII digits
        "org " + "9" * 5000,  # int() refuses more than 4,300 digits
        b"\xff\xfe 7",
    ],
)
def test_malformed_payloads_decode_to_none(payload: str | bytes) -> None:
    assert Notice.decode(payload) is None


# --- every backend ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(URLS))
async def test_delivers_published_notices_after_a_reset(kind: str) -> None:
    org_id = org()
    async with started(URLS[kind], org_id) as (bus, recorder):
        await connected(bus)
        await recorder.until(lambda: recorder.resets == 1, "on_reset after connecting")
        assert bus.state is BusState.CONNECTED
        for position in (1, 2, 3):
            await bus.publish(org_id, position)
        await recorder.until(lambda: len(recorder.positions) >= 3, "three notices")
        assert recorder.positions == [1, 2, 3]
        assert recorder.resets == 1
        assert bus.reconnects == 0


@pytest.mark.parametrize("kind", list(URLS))
async def test_malformed_payloads_are_dropped_and_the_listener_goes_on(kind: str) -> None:
    org_id = org()
    async with started(URLS[kind], org_id) as (bus, recorder):
        await connected(bus)
        for payload in ("garbage", f"{org_id} -3", f"{org_id} ²", f"{org_id} {'9' * 5000}", ""):
            await bus.backend.publish(payload)  # straight to the broker: the Bus only publishes good ones
        await bus.publish(org_id, 7)
        await recorder.until(lambda: recorder.positions == [7], "the good notice after the bad ones")
        assert recorder.resets == 1, "a malformed payload must not restart the listener"
        assert bus.reconnects == 0
        assert bus.state is BusState.CONNECTED


@pytest.mark.parametrize("kind", SHARED)
async def test_two_buses_on_one_broker_see_each_others_notices(kind: str) -> None:
    org_id = org()
    async with started(URLS[kind], org_id) as (one, heard_by_one), started(URLS[kind], org_id) as (two, heard_by_two):
        await connected(one)
        await connected(two)
        await one.publish(org_id, 1)
        await heard_by_two.until(lambda: 1 in heard_by_two.positions, "the other process's notice")
        await two.publish(org_id, 2)
        await heard_by_one.until(lambda: 2 in heard_by_one.positions, "the other process's notice")
        # every process hears its own notices too (its own hub fans out its own writes)
        await heard_by_one.until(lambda: heard_by_one.positions == [1, 2], "both notices, in order")
        await heard_by_two.until(lambda: heard_by_two.positions == [1, 2], "both notices, in order")


@pytest.mark.parametrize("kind", SHARED)
async def test_publish_never_raises_while_the_broker_is_unreachable(kind: str) -> None:
    url = named(kind, f"sc-unreachable-{uuid.uuid4().hex[:8]}", port=closed_port())
    org_id = org()
    async with started(url, org_id) as (bus, recorder):
        await until_state(bus, lambda b: b.state is BusState.RECONNECTING, "RECONNECTING")
        assert not bus.connected.is_set()
        started_at = time.monotonic()
        for position in range(1, 50):
            await bus.publish(org_id, position)  # must neither raise nor wait for the broker
        assert time.monotonic() - started_at < 1.0
        assert bus._task is not None and not bus._task.done(), "the supervisor must keep retrying"
        assert recorder.resets == 0, "nothing connected, so nothing to reset"
        assert bus.state is BusState.RECONNECTING


@pytest.mark.parametrize("kind", SHARED)
async def test_retries_until_the_broker_is_back_and_then_sends_what_it_could_not(kind: str) -> None:
    proxy = await Proxy("127.0.0.1", 6379 if kind == "redis" else 5432).start()
    proxy.mode = "refuse"
    org_id = org()
    try:
        async with (
            started(named(kind, f"sc-retry-{uuid.uuid4().hex[:8]}", port=proxy.port), org_id) as (bus, recorder),
            started(URLS[kind], org_id) as (observer, heard),
        ):
            await connected(observer)
            await until_state(bus, lambda _: proxy.refused >= 3, "three refused connection attempts")
            assert bus.state is BusState.RECONNECTING
            assert recorder.resets == 0
            lags: list[float] = []
            observer.on_lag = lags.append
            kept_at = time.time()
            await bus.publish(org_id, 41)  # while the broker is away: kept, not raised
            await bus.publish(org_id, 42)
            await until_state(bus, lambda _: proxy.refused >= 5, "two more refused connection attempts")
            away = time.time() - kept_at
            proxy.mode = "forward"
            await connected(bus)
            await recorder.until(lambda: recorder.resets == 1, "on_reset once connected")
            assert bus.reconnects == 1
            # the newest notice the bus could not send reaches the other process after all
            await heard.until(lambda: 42 in heard.positions, "the notice kept while the broker was away")
            assert lags and lags[-1] >= away - 0.002, (lags, away)  # its lag counts from its first try (ms)
            await recorder.until(lambda: 42 in recorder.positions, "its own kept notice")
    finally:
        await proxy.close()


# --- the broker drops the connection ----------------------------------------------------------


async def test_redis_pubsub_connection_killed_reconnects_and_resets() -> None:
    name = f"sc-kill-{uuid.uuid4().hex[:8]}"
    org_id = org()
    async with started(named("redis", name), org_id) as (bus, recorder):
        await connected(bus)
        await bus.publish(org_id, 1)
        await recorder.until(lambda: recorder.positions == [1], "the first notice")
        assert await kill_redis_clients(name, "pubsub") == 1
        await recorder.until(lambda: recorder.resets == 2, "on_reset after the reconnect")
        assert bus.reconnects == 1
        await connected(bus)
        await bus.publish(org_id, 2)
        await recorder.until(lambda: recorder.positions == [1, 2], "a notice after the reconnect")


async def test_redis_publishing_connection_killed_loses_no_notice() -> None:
    name = f"sc-kill-pub-{uuid.uuid4().hex[:8]}"
    org_id = org()
    async with started(named("redis", name), org_id) as (bus, recorder), started(REDIS_URL, org_id) as (_, heard):
        await connected(bus)
        await bus.publish(org_id, 1)
        await heard.until(lambda: heard.positions == [1], "the first notice")
        assert await kill_redis_clients(name, "normal") == 1
        await bus.publish(org_id, 2)  # on the killed connection: fails once, then is sent again
        await heard.until(lambda: 2 in heard.positions, "the notice published on the killed connection")
        assert heard.positions == [1, 2]
        assert recorder.resets == 1, "the listening connection was not touched"


async def test_postgres_listening_connection_terminated_reconnects_and_resets() -> None:
    name = f"sc-kill-{uuid.uuid4().hex[:8]}"
    org_id = org()
    async with started(named("postgres", name), org_id) as (bus, recorder):
        await connected(bus)
        await bus.publish(org_id, 1)
        await recorder.until(lambda: recorder.positions == [1], "the first notice")
        assert await kill_postgres_backends(name, "LISTEN%") == 1
        await recorder.until(lambda: recorder.resets == 2, "on_reset after the reconnect")
        assert bus.reconnects == 1
        await connected(bus)
        await bus.publish(org_id, 2)
        await recorder.until(lambda: recorder.positions == [1, 2], "a notice after the reconnect")


async def test_postgres_publishing_connection_terminated_reconnects_and_loses_no_notice() -> None:
    name = f"sc-kill-pub-{uuid.uuid4().hex[:8]}"
    org_id = org()
    async with (
        started(named("postgres", name), org_id) as (bus, recorder),
        started(POSTGRES_URL, org_id) as (observer, heard),
    ):
        await connected(bus)
        await connected(observer)
        await bus.publish(org_id, 1)
        await heard.until(lambda: heard.positions == [1], "the first notice")
        assert await kill_postgres_backends(name, "%pg_notify%") == 1
        await bus.publish(org_id, 2)  # maybe on the dead connection: then kept and sent after the reconnect
        await recorder.until(lambda: recorder.resets == 2, "a reconnect (and reset) after losing the publisher")
        assert bus.reconnects == 1
        await heard.until(lambda: 2 in heard.positions, "the notice published around the kill")
        await connected(bus)
        await bus.publish(org_id, 3)
        await heard.until(lambda: 3 in heard.positions, "a notice from the new publishing connection")
        assert heard.positions == [1, 2, 3]


@pytest.mark.parametrize("kind", SHARED)
async def test_a_silently_dead_connection_is_noticed_and_replaced(kind: str) -> None:
    """No FIN, no RST: the network just stops. The heartbeat must notice; publish must not hang."""
    proxy = await Proxy("127.0.0.1", 6379 if kind == "redis" else 5432).start()
    org_id = org()
    url = named(kind, f"sc-frozen-{uuid.uuid4().hex[:8]}", port=proxy.port)
    try:
        async with (
            started(url, org_id, heartbeat_seconds=0.2, publish_timeout=0.5) as (bus, recorder),
            started(URLS[kind], org_id) as (observer, heard),
        ):
            await connected(bus)
            await connected(observer)
            await bus.publish(org_id, 1)
            await heard.until(lambda: heard.positions == [1], "the first notice")
            await recorder.until(lambda: recorder.positions == [1], "its own first notice")
            assert proxy.freeze() >= 2  # listening and publishing connections
            started_at = time.monotonic()
            await bus.publish(org_id, 2)  # into the silence: bounded by publish_timeout, never raises
            assert time.monotonic() - started_at < 2.0
            await recorder.until(lambda: recorder.resets == 2, "a reconnect once the heartbeat finds silence")
            assert bus.reconnects >= 1
            await heard.until(lambda: 2 in heard.positions, "the notice published into the silence")
            await connected(bus)
            await bus.publish(org_id, 3)
            await heard.until(lambda: 3 in heard.positions, "a notice on the new connection")
            await recorder.until(lambda: 3 in recorder.positions, "its own notice on the new connection")
    finally:
        await proxy.close()


@pytest.mark.parametrize("kind", SHARED)
async def test_the_heartbeat_leaves_a_healthy_quiet_connection_alone(kind: str) -> None:
    org_id = org()
    async with started(URLS[kind], org_id, heartbeat_seconds=0.05) as (bus, recorder):
        await connected(bus)
        # Nothing to await here: the point is that nothing happens. Twenty heartbeats' worth of
        # quiet, each answered (PING / SELECT 1), must not look like a dead connection.
        await asyncio.sleep(1.0)
        assert bus.reconnects == 0 and recorder.resets == 1, f"the probe broke a healthy connection: {bus.state}"
        await bus.publish(org_id, 1)
        await recorder.until(lambda: recorder.positions == [1], "a notice after the quiet")


async def test_close_stops_the_listener_and_later_publishes_are_harmless() -> None:
    org_id = org()
    bus = open_bus(REDIS_URL)
    recorder = Recorder(org_id)
    bus.start(recorder)
    await connected(bus)
    async with asyncio.timeout(WAIT):
        await bus.close()
    assert bus.state is BusState.CLOSED
    assert bus._task is not None and bus._task.done()
    assert not bus.connected.is_set()
    await bus.publish(org_id, 1)  # after close: no error
    assert recorder.positions == []
