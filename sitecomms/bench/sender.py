"""The sending half of the load generator, in a process of its own.

At a few thousand messages a second one Python process cannot both send the HTTP requests and
read the realtime frames without becoming the bottleneck it measures. So the open and closed
loops run their sends in a worker process (`run_plan`, through a one-process pool), while the
main process keeps every receiver socket. Each side timestamps with `time.perf_counter()`,
which on Linux is `CLOCK_MONOTONIC`, one clock for every process of the machine, so a send time
from the worker and an arrival time from the main process can be subtracted.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from sitecomms.bench.loadgen import HttpPool

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
    try:
        import uvloop

        return uvloop.run(_run(plan))
    except ImportError:
        return asyncio.run(_run(plan))


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


async def _run(plan: Plan) -> Outcome:
    cpu0 = _cpu()
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
    return Outcome(records, _cpu() - cpu0)


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
