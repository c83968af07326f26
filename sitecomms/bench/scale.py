"""The scale phase: 10,000 idle sockets held by worker processes, then one broadcast to all."""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

from sitecomms.bench.phases import Result, Sends, World, begin
from sitecomms.bench.workers import HoldPlan, hold_sockets


async def scale(world: World, connections: int, holders: int = 2) -> Result:
    """`connections` more idle sockets (of the medics, round robin) held by `holders` worker
    processes; then one broadcast to all of them and the pairs' receivers."""
    rss0, cpu0 = world.rss(), world.cpu()
    key = world.next_key("scale")
    context = multiprocessing.get_context("spawn")
    shares = [connections // holders + (1 if k < connections % holders else 0) for k in range(holders)]
    plans = [
        HoldPlan(world.ws_urls, world.medic_tokens, first=sum(shares[:k]), count=share, key=key)
        for k, share in enumerate(shares)
    ]
    pipes, processes = [], []
    for plan in plans:
        parent, child = context.Pipe()
        process = context.Process(target=hold_sockets, args=(plan, child), daemon=True)
        process.start()
        pipes.append(parent)
        processes.append(process)
    try:
        connect_s = max([await _from_holder(pipe, "live", 300) for pipe in pipes])  # in parallel, per holder
        await asyncio.sleep(2)
        rss1 = world.rss()
        cpu1 = world.cpu()
        await asyncio.sleep(5)
        idle_cpu = (world.cpu() - cpu1) / 5
        sends = Sends(world)
        names = [pair.receiver.name for pair in world.pairs] + [
            f"scale-{i}" for plan in plans for i in range(plan.first, plan.first + plan.count)
        ]
        b_started, b_cpu0, b_self0 = begin(world)
        await sends.send(0, world.admin_token, world.broadcast_id, names, key=key)
        for pipe, plan in zip(pipes, plans, strict=True):
            arrivals, cpu = await _from_holder(pipe, "done", plan.wait_seconds + 30)
            for name, at in arrivals.items():
                world.receipts.record(name, key, at)
            sends.worker_cpu += cpu
        await sends.drain()
        result = sends.summary(f"broadcast to {len(names)} connected", b_started, b_cpu0, b_self0)
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
    result.update(
        idle_connections=connections,
        holder_processes=holders,
        connect_seconds=connect_s,
        rss_per_connection_kib=(rss1 - rss0) / connections / 1024,
        idle_server_cpu_percent=100 * idle_cpu,
        setup_server_cpu_s=cpu1 - cpu0,
        last_delivery_ms=result["latency_ms"]["max"],
    )
    return result


async def _from_holder(pipe: Any, expected: str, within: float) -> Any:
    """The next report of a socket-holder process (see `workers.hold_sockets`)."""

    def receive() -> Any:
        if not pipe.poll(within):
            raise TimeoutError(f"a socket holder sent no {expected!r} within {within:.0f} s")
        try:
            return pipe.recv()
        except EOFError:
            raise RuntimeError("a socket holder process died") from None

    report = await asyncio.to_thread(receive)
    if report[0] != expected:
        raise RuntimeError(f"a socket holder said {report[0]!r}, not {expected!r}")
    return report[1] if len(report) == 2 else report[1:]
