"""The benchmark's phases. Each one is bounded (a duration or a count) and returns a result dict."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from sitecomms.bench.loadgen import (
    HttpPool,
    Receipts,
    Receiver,
    own_cpu_seconds,
    process_cpu_seconds,
    process_rss_bytes,
)
from sitecomms.bench.workers import Outcome, Plan, paced, run_plan
from sitecomms.protocol.enums import ChangeType

Result = dict[str, Any]
DRAIN_SECONDS = 30.0  # how long after the last send answered a delivery may still arrive


@dataclass
class Pair:
    sender_token: str
    conversation_id: str
    receiver: Receiver


@dataclass
class World:
    """What the setup made: the users, their sockets, the server processes and the pools."""

    pools: list[HttpPool]
    pairs: list[Pair]
    broadcast_id: str
    admin_token: str
    medic_tokens: list[str]
    receivers: list[Receiver]
    server_pids: list[int]
    ws_urls: list[str]
    host: str = "127.0.0.1"
    ports: list[int] = field(default_factory=list)
    sender: Executor | None = None  # the sending worker process (workers.py), started by the runner
    receipts: Receipts = field(default_factory=Receipts)
    counter: int = 0

    def next_key(self, tag: str) -> str:
        self.counter += 1
        return f"{tag}-{self.counter}"

    def pool(self, index: int) -> HttpPool:
        return self.pools[index % len(self.pools)]

    def cpu(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self.server_pids)

    def rss(self) -> int:
        return sum(process_rss_bytes(pid) for pid in self.server_pids)


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": ordered[-1] * 1000}


class Sends:
    """The sends of one phase: when each was scheduled and sent, and who should receive it."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.scheduled: dict[str, float] = {}
        self.sent: dict[str, float] = {}
        self.expected: dict[str, list[str]] = {}
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.answered: dict[str, float] = {}  # key -> seconds until the HTTP response
        self.acked: set[str] = set()  # keys the server acknowledged (200/201): these must be delivered
        self.worker_cpu = 0.0  # CPU of the sending worker process, if one sent

    async def send(
        self,
        index: int,
        token: str,
        conversation_id: str,
        receivers: list[str],
        key: str | None = None,
        scheduled: float | None = None,
    ) -> int:
        key = key or self.world.next_key("m")
        now = time.perf_counter()
        self.scheduled.setdefault(key, scheduled if scheduled is not None else now)
        self.sent.setdefault(key, now)
        self.expected[key] = receivers
        try:
            status, _ = await self.world.pool(index).request(
                "POST",
                "/v1/messages",
                {"conversation_id": conversation_id, "content": f"bench {key}", "idempotency_key": key},
                token,
            )
        except (OSError, TimeoutError, RuntimeError, asyncio.IncompleteReadError):
            self.errors += 1
            return 0
        self.answered.setdefault(key, time.perf_counter() - now)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status in (200, 201):
            self.acked.add(key)
        return status

    async def send_pair(self, index: int, scheduled: float | None = None) -> int:
        pair = self.world.pairs[index % len(self.world.pairs)]
        return await self.send(
            index, pair.sender_token, pair.conversation_id, [pair.receiver.name], scheduled=scheduled
        )

    def pending(self) -> int:
        times = self.world.receipts.times
        return sum(1 for key, names in self.expected.items() for name in names if (name, key) not in times)

    async def drain(self, within: float = DRAIN_SECONDS) -> None:
        """Until every expected delivery arrived, or `within` seconds (what is missing then counts as lost)."""
        deadline = time.perf_counter() + within
        # polls: the deliveries are recorded by many receiver tasks, no single event to wait for
        while self.pending() and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    def record(self, outcome: Outcome, receivers: list[str]) -> None:
        """Take the sends the worker process made (pair i's message goes to `receivers[i]`)."""
        self.worker_cpu += outcome.cpu_seconds
        for key, pair, scheduled, sent, answered, status in outcome.records:
            self.scheduled[key], self.sent[key], self.expected[key] = scheduled, sent, [receivers[pair]]
            if status == 0:
                self.errors += 1
                continue
            self.answered[key] = answered
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status in (200, 201):
                self.acked.add(key)

    def summary(self, name: str, started: float, cpu0: float, self_cpu0: float, **extra: Any) -> Result:
        receipts = self.world.receipts
        from_send: list[float] = []
        from_sched: list[float] = []
        lost = dup = 0
        last = started
        for key, names in self.expected.items():
            for receiver in names:
                at = receipts.times.get((receiver, key))
                if at is None:
                    lost += key in self.acked  # an unacknowledged send is a failed send, not a lost delivery
                    continue
                last = max(last, at)
                from_send.append(at - self.sent[key])
                from_sched.append(at - self.scheduled[key])
                dup += receipts.duplicates.get((receiver, key), 0)
        elapsed = max(last - started, 1e-9)
        deliveries = len(from_send)
        cpu = self.world.cpu() - cpu0
        self_cpu = own_cpu_seconds() - self_cpu0 + self.worker_cpu
        wall = time.perf_counter() - started
        return {
            "phase": name,
            "messages": len(self.expected),
            "deliveries": deliveries,
            "delivered_per_s": deliveries / elapsed,
            "latency_ms": percentiles(from_send),
            "latency_from_schedule_ms": percentiles(from_sched),
            "send_response_ms": percentiles(list(self.answered.values())),
            "server_cpu_s": cpu,
            "server_cpu_s_per_1000": (cpu / deliveries * 1000) if deliveries else None,
            "server_rss_mib": self.world.rss() / 2**20,
            "loadgen_cpu_percent": 100 * self_cpu / wall if wall > 0 else None,
            "lost": lost,
            "duplicated": dup,
            "http_statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "send_errors": self.errors,
            "unacknowledged_sends": len(self.expected) - len(self.acked),
            **extra,
        }


def begin(world: World) -> tuple[float, float, float]:
    return time.perf_counter(), world.cpu(), own_cpu_seconds()


async def _remote(world: World, sends: Sends, duration: float, *, rate: float | None, in_flight: int | None) -> None:
    """Run the sends in the worker process; this process keeps reading every socket meanwhile."""
    assert world.sender is not None, "the runner starts the sending worker before the loops"
    plan = Plan(
        host=world.host,
        ports=world.ports,
        pairs=[(pair.sender_token, pair.conversation_id) for pair in world.pairs],
        key_prefix=world.next_key("w"),
        duration=duration,
        rate=rate,
        in_flight=in_flight,
    )
    outcome = await asyncio.get_running_loop().run_in_executor(world.sender, run_plan, plan)
    sends.record(outcome, [pair.receiver.name for pair in world.pairs])


async def open_loop(world: World, name: str, rate: float, duration: float) -> Result:
    sends = Sends(world)
    started, cpu0, self0 = begin(world)
    await _remote(world, sends, duration, rate=rate, in_flight=None)
    await sends.drain()
    return sends.summary(name, started, cpu0, self0, offered_per_s=rate, duration_s=duration)


async def closed_loop(world: World, in_flight: int, duration: float) -> Result:
    sends = Sends(world)
    started, cpu0, self0 = begin(world)
    await _remote(world, sends, duration, rate=None, in_flight=in_flight)
    await sends.drain()
    return sends.summary(
        f"closed loop, {in_flight} in flight", started, cpu0, self0, in_flight=in_flight, duration_s=duration
    )


async def fan_out(world: World, rate: float, duration: float) -> Result:
    sends = Sends(world)
    names = [pair.receiver.name for pair in world.pairs]
    started, cpu0, self0 = begin(world)
    await paced(rate, duration, lambda i, at: sends.send(i, world.admin_token, world.broadcast_id, names, scheduled=at))
    await sends.drain()
    return sends.summary(f"fan-out 1→{len(names)}", started, cpu0, self0, offered_per_s=rate, duration_s=duration)


async def idempotency(world: World, count: int) -> Result:
    sends = Sends(world)
    started, cpu0, self0 = begin(world)
    outcomes = []
    for i in range(count):
        pair = world.pairs[i % len(world.pairs)]
        key = world.next_key("idem")
        both = await asyncio.gather(
            *(sends.send(i, pair.sender_token, pair.conversation_id, [pair.receiver.name], key=key) for _ in range(2))
        )
        outcomes.append(sorted(both))
    await sends.drain(5.0)
    await asyncio.sleep(0.5)  # time for a second (wrong) delivery to show up
    right = sum(1 for both in outcomes if both == [200, 201])
    return sends.summary(
        "idempotency (each sent twice)", started, cpu0, self0, sent_twice=count, answered_201_then_200=right
    )


async def catch_up(world: World, receivers: int, missed: int) -> Result:
    chosen = world.pairs[:receivers]
    sends = Sends(world)
    started, cpu0, self0 = begin(world)
    for pair in chosen:
        await pair.receiver.close()
    for _ in range(missed):
        await asyncio.gather(
            *(
                sends.send(j, pair.sender_token, pair.conversation_id, [pair.receiver.name])
                for j, pair in enumerate(chosen)
            )
        )
    times: list[float] = []

    async def rejoin(pair: Pair) -> None:
        receiver = pair.receiver
        receiver.count = 0
        begin = time.perf_counter()
        await receiver.connect(receiver.cursor)
        if await receiver.wait_count(missed, DRAIN_SECONDS):
            times.append(time.perf_counter() - begin)

    await asyncio.gather(*(rejoin(pair) for pair in chosen))
    await asyncio.wait_for(asyncio.gather(*(pair.receiver.live.wait() for pair in chosen)), DRAIN_SECONDS)
    result = sends.summary(
        f"catch-up {receivers}×{missed}", started, cpu0, self0, receivers=receivers, missed_each=missed
    )
    result["catch_up_ms"] = percentiles(times)
    result["note"] = "latency columns: from the send to the replayed delivery (includes the time away)"
    return result


async def polling(world: World, interval: float, rate: float, duration: float) -> Result:
    """The older design: every medic polls GET /v1/sync every `interval` s; no sockets held meanwhile."""
    for receiver in world.receivers:
        await receiver.close()
    polled = Receipts()
    sends = Sends(world)
    real = world.receipts
    cursors = {r.name: r.cursor for r in world.receivers}
    tokens = {pair.receiver.name: pair.receiver.token for pair in world.pairs}
    started, cpu0, self0 = begin(world)
    stop_at = started + duration + interval + 1
    requests = 0
    message_created = ChangeType.MESSAGE_CREATED.value  # a plain string, compared per change

    async def poller(index: int, name: str) -> None:
        nonlocal requests
        await asyncio.sleep(random.uniform(0, interval))
        while time.perf_counter() < stop_at:
            more = True
            while more:
                status, page = await world.pool(index).request(
                    "GET", f"/v1/sync?cursor={cursors[name]}", token=tokens[name]
                )
                requests += 1
                if status != 200:
                    raise RuntimeError(f"sync answered {status}: {page}")
                at = time.perf_counter()
                for change in page["changes"]:
                    if change["type"] == message_created:
                        polled.record(name, change["data"]["idempotency_key"], at)
                cursors[name] = page["next_cursor"]
                more = page["has_more"]
            await asyncio.sleep(interval)

    pollers = [asyncio.create_task(poller(i, r.name)) for i, r in enumerate(world.receivers)]
    world.receipts = polled
    try:
        await paced(rate, duration, lambda i, at: sends.send_pair(i, at))
        await asyncio.gather(*pollers)
        result = sends.summary(
            f"polling every {interval:g} s",
            started,
            cpu0,
            self0,
            offered_per_s=rate,
            duration_s=duration,
            poll_interval_s=interval,
            sync_requests=requests,
        )
    finally:
        for task in pollers:
            task.cancel()
        world.receipts = real
    for receiver in world.receivers:
        receiver.cursor = cursors[receiver.name]
        await receiver.connect(receiver.cursor)
    await asyncio.wait_for(asyncio.gather(*(r.live.wait() for r in world.receivers)), DRAIN_SECONDS)
    return result


async def warm_up(world: World, rate: float, duration: float) -> None:
    sends = Sends(world)
    await paced(rate, duration, lambda i, at: sends.send_pair(i, at))
    await sends.drain(10)
