"""Load-generator worker processes: the sending half of the loops, and holders of idle sockets.

At a few thousand messages a second one Python process cannot both send the HTTP requests and
read the realtime frames without becoming the bottleneck it measures; nor can one process read
a broadcast's frames from 10,000 sockets in well under a second. So:

- the open and closed loops run their sends in a worker process (`run_plan`, through a
  one-process pool) while the main process keeps every receiver socket;
- the scale phase spreads its idle sockets over holder processes (`hold_sockets`), each
  reporting over a pipe when its sockets are live and, after the broadcast, when each socket
  received it.

Every process timestamps with `time.perf_counter()`, which on Linux is `CLOCK_MONOTONIC`, one
clock for every process of the machine, so a send time from one process and an arrival time
from another can be subtracted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from sitecomms.bench.loadgen import HttpPool, Receipts, Receiver, own_cpu_seconds, quiet_gc, run_async

Launch = Callable[[int, float], Coroutine[Any, Any, Any]]

# key, pair index, scheduled, sent, seconds until answered, HTTP status (0: no answer)
SendRecord = tuple[str, int, float, float, float, int]


@dataclass(frozen=True)
class Plan:
    host: str
    ports: list[int]
    pairs: list[tuple[str, str]]  # (sender token, conversation id), round robin
    key_prefix: str  # keys are f"{key_prefix}-{i}", unique across phases
    duration: float
    rate: float | None = None  # open loop: sends per second
    in_flight: int | None = None  # closed loop: sends outstanding at any time


@dataclass(frozen=True)
class Outcome:
    records: list[SendRecord]
    cpu_seconds: float  # the worker's CPU during the plan


def run_plan(plan: Plan) -> Outcome:
    """Entry point in the worker process: run the plan to its end, bounded by its duration."""
    quiet_gc()
    return run_async(lambda: _run(plan))


async def _run(plan: Plan) -> Outcome:
    cpu0 = own_cpu_seconds()
    pools = [HttpPool(plan.host, port) for port in plan.ports]
    records: list[SendRecord] = []

    async def send(index: int, scheduled: float | None) -> None:
        token, conversation_id = plan.pairs[index % len(plan.pairs)]
        key = f"{plan.key_prefix}-{index}"
        body = {"conversation_id": conversation_id, "content": f"bench {key}", "idempotency_key": key}
        sent = time.perf_counter()
        try:
            status, _ = await pools[index % len(pools)].request("POST", "/v1/messages", body, token)
        except (OSError, TimeoutError, RuntimeError, asyncio.IncompleteReadError):
            status = 0
        answered = time.perf_counter() - sent
        records.append((key, index % len(plan.pairs), sent if scheduled is None else scheduled, sent, answered, status))

    try:
        if plan.rate is not None:
            await paced(plan.rate, plan.duration, send)
        else:
            end = time.perf_counter() + plan.duration
            counter = iter(range(10**9))

            async def worker() -> None:
                while time.perf_counter() < end:
                    await send(next(counter), None)

            await asyncio.gather(*(worker() for _ in range(plan.in_flight or 1)))
    finally:
        for pool in pools:
            await pool.close()
    return Outcome(records, own_cpu_seconds() - cpu0)


_TICK = 0.001
_SETTLE_SECONDS = 60.0


async def paced(rate: float, duration: float, launch: Launch) -> None:
    """Open loop: launch the i-th send at start + i/rate, whatever the earlier ones are doing."""
    tasks: set[asyncio.Task[Any]] = set()
    start = time.perf_counter()
    total = int(rate * duration)
    index = 0
    while index < total:
        now = time.perf_counter()
        while index < total and start + index / rate <= now:
            task = asyncio.create_task(launch(index, start + index / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            index += 1
        if index < total:  # ticks of at least 1 ms: a timer per send costs more than the send at high rates
            await asyncio.sleep(max(_TICK, start + index / rate - time.perf_counter()))
    if tasks:
        await asyncio.wait(tasks, timeout=_SETTLE_SECONDS)


# --- holding idle sockets (the scale phase) -------------------------------------------------


@dataclass(frozen=True)
class HoldPlan:
    ws_urls: list[str]
    tokens: list[str]  # socket i signs in with tokens[i % len(tokens)]
    first: int  # sockets are named f"scale-{i}" for i in range(first, first + count)
    count: int
    key: str  # the idempotency key of the broadcast to wait for
    batch: int = 200
    wait_seconds: float = 120.0  # for the broadcast, once live


def hold_sockets(plan: HoldPlan, pipe: Any) -> None:
    """Entry point of a holder process. Sends ("live", connect_seconds) when every socket is
    live, then ("done", {name: arrival}, cpu_seconds) once each has the broadcast (or in time)."""
    quiet_gc()
    run_async(lambda: _hold(plan, pipe))


async def _hold(plan: HoldPlan, pipe: Any) -> None:
    receipts = Receipts()
    receivers = [
        Receiver(plan.ws_urls[i % len(plan.ws_urls)], f"scale-{i}", plan.tokens[i % len(plan.tokens)], receipts)
        for i in range(plan.first, plan.first + plan.count)
    ]
    started = time.perf_counter()
    try:
        for first in range(0, len(receivers), plan.batch):
            group = receivers[first : first + plan.batch]
            await asyncio.gather(*(r.connect(None) for r in group))
            async with asyncio.timeout(60):
                await asyncio.gather(*(r.live.wait() for r in group))
        pipe.send(("live", time.perf_counter() - started))
        cpu0 = own_cpu_seconds()  # from here on: idle sockets, then the broadcast
        await asyncio.gather(*(r.wait_count(1, plan.wait_seconds) for r in receivers))
        arrivals = {name: at for (name, key), at in receipts.times.items() if key == plan.key}
        pipe.send(("done", arrivals, own_cpu_seconds() - cpu0))
    finally:
        for first in range(0, len(receivers), plan.batch):
            await asyncio.gather(*(r.close() for r in receivers[first : first + plan.batch]))
