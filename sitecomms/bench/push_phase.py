"""The push phase: one admin broadcast to N subscribed devices, served by the push double.

Setup over the API, like any client: ceil(N / PUSH_DEVICES_PER_USER) more medics, one session
per device (`POST /v1/auth/login`), and per session one subscription (`POST
/v1/push/subscriptions`) made by the double (`push_host.PushHost`) for the server's key
(`GET /v1/push/key`). The probe: the pairs' direct sends at `probe_rate` for `probe_seconds`,
paced from this process, and the send path's figures (the HTTP answer, send → realtime
delivery); it runs once before the setup (no subscription at all, for reference). Then:

1. the probe again, the subscriptions in place and no push flowing;
2. broadcast A alone: from the send's acknowledgement to the last push the double accepted, and
   the server processes' CPU over that window per 1,000 pushes;
3. broadcast B with the same probe running: only the probe's sends made between B's send and
   its last push count, and their p99 is compared with the lower of step 1's and the probe's
   before any subscription (a WAL flush stall in either must not make the bar easier).

Every device must get exactly one push of each broadcast: a device without one is `lost`, a
second push of one message is `duplicated`.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sitecomms.bench.loadgen import HttpPool, own_cpu_seconds
from sitecomms.bench.phases import Result, Sends, World, percentiles
from sitecomms.bench.push_host import MessagePushes, PushHost, Tally
from sitecomms.protocol.enums import Role
from sitecomms.protocol.limits import PUSH_DEVICES_PER_USER

PASSWORD = "bench-password"
SETUP_IN_FLIGHT = 16
_SETTLE = 0.5  # between the probe's start and the broadcast: the probe is in its stride


async def _call(pool: HttpPool, method: str, path: str, body: Any, token: str | None, ok: int) -> Any:
    status, data = await pool.request(method, path, body, token)
    if status != ok:
        raise RuntimeError(f"{method} {path} answered {status}: {data}")
    return data


async def _bounded(count: int, job: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """job(i) for i in range(count), SETUP_IN_FLIGHT at a time, results in order."""
    slots = asyncio.Semaphore(SETUP_IN_FLIGHT)

    async def one(i: int) -> Any:
        async with slots:
            return await job(i)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def subscribe_devices(world: World, host: PushHost, devices: int) -> int:
    """Make the users, sessions and subscriptions; returns how many users."""
    pool = world.pool(0)
    users = math.ceil(devices / PUSH_DEVICES_PER_USER)
    tag = uuid.uuid4().hex[:6]
    emails = [f"push{i}-{tag}@bench.example" for i in range(users)]

    async def create(i: int) -> None:
        user = {"email": emails[i], "display_name": f"Pushed {i}", "role": Role.MEDIC.value, "password": PASSWORD}
        await _call(pool, "POST", "/v1/users", user, world.admin_token, 201)

    async def login(d: int) -> str:
        body = {"email": emails[d // PUSH_DEVICES_PER_USER], "password": PASSWORD, "device": f"bench device {d}"}
        return str((await _call(world.pool(d), "POST", "/v1/auth/login", body, None, 200))["access_token"])

    await _bounded(users, create)
    tokens = await _bounded(devices, login)
    key = (await _call(pool, "GET", "/v1/push/key", None, world.admin_token, 200))["public_key"]
    subscriptions = await host.subscribe(key, devices)

    async def subscribe(d: int) -> None:
        await _call(world.pool(d), "POST", "/v1/push/subscriptions", subscriptions[d], tokens[d], 201)

    await _bounded(devices, subscribe)
    return users


async def probe(world: World, sends: Sends, rate: float, seconds: float, stop: asyncio.Event | None = None) -> None:
    """The pairs' direct sends at `rate` from this process, for `seconds` or until `stop` is set."""
    tasks: set[asyncio.Task[Any]] = set()
    start = time.perf_counter()
    index = 0
    while time.perf_counter() - start < seconds and not (stop and stop.is_set()):
        due = start + index / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
            continue
        task = asyncio.create_task(sends.send_pair(index, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        index += 1
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    await sends.drain(10)


def probe_figures(sends: Sends, since: float = 0.0, until: float = math.inf) -> dict[str, Any]:
    """The send path's figures for the probe's sends made in [since, until]."""
    receipts = sends.world.receipts
    delivery: list[float] = []
    answered: list[float] = []
    lost = 0
    for key, names in sends.expected.items():
        sent = sends.sent[key]
        if not since <= sent <= until:
            continue
        if key in sends.answered:
            answered.append(sends.answered[key])
        for name in names:
            at = receipts.times.get((name, key))
            if at is None:
                lost += key in sends.acked
            else:
                delivery.append(at - sent)
    return {
        "samples": len(answered),
        "delivery_ms": percentiles(delivery),
        "send_response_ms": percentiles(answered),
        "lost": lost,
    }


async def _broadcast(world: World, host: PushHost, expected_total: int, within: float) -> dict[str, Any]:
    """One admin broadcast; waits for `expected_total` pushes in all (or `within`)."""
    cpu0, gen0 = world.cpu(), own_cpu_seconds()
    sent = time.perf_counter()
    key = world.next_key("push")
    body = {"conversation_id": world.broadcast_id, "content": f"bench {key}", "idempotency_key": key}
    message = await _call(world.pool(0), "POST", "/v1/messages", body, world.admin_token, 201)
    acked = time.perf_counter()
    tally = await host.tally(expected_total, within)
    done = time.perf_counter()
    pushes = tally.by_message.get(str(message["id"])) or MessagePushes(0, 0, acked, acked)
    return {
        "tally": tally,
        "pushes": pushes,
        "sent": sent,
        "acked": acked,
        "server_cpu_s": world.cpu() - cpu0,
        "loadgen_cpu_s": own_cpu_seconds() - gen0,
        "wall_s": done - sent,
    }


def reference_p99(key: str, *without: dict[str, Any]) -> float | None:
    """The lowest p99 of `key` among the probes `without` pushes: a stall in one lifts no bar."""
    known = [probe[key]["p99"] for probe in without if probe[key]["p99"] is not None]
    return min(known) if known else None


def p99_changes(during: dict[str, Any], *without: dict[str, Any]) -> dict[str, float | None]:
    """The send path's p99 while pushing, in % above `reference_p99`, for delivery and the HTTP answer."""
    return {
        key: _change(during[key]["p99"], reference_p99(key, *without)) for key in ("delivery_ms", "send_response_ms")
    }


def _change(during: float | None, without: float | None) -> float | None:
    return None if during is None or not without else 100 * (during - without) / without


async def push(
    world: World,
    host: PushHost,
    *,
    devices: int,
    probe_rate: float,
    probe_seconds: float,
    within: float,
) -> Result:
    bare = Sends(world)
    await probe(world, bare, probe_rate, probe_seconds)
    setup_started = time.perf_counter()
    users = await subscribe_devices(world, host, devices)
    setup_s = time.perf_counter() - setup_started
    before = await host.tally(0, 0)

    quiet = Sends(world)
    await probe(world, quiet, probe_rate, probe_seconds)
    baseline = probe_figures(quiet)

    double_cpu0 = (await host.tally(0, 0)).cpu_seconds
    a = await _broadcast(world, host, before.received + devices, within)
    tally_a: Tally = a["tally"]
    double_cpu_a = tally_a.cpu_seconds - double_cpu0

    busy = Sends(world)
    stop = asyncio.Event()
    probing = asyncio.create_task(probe(world, busy, probe_rate, within, stop))
    await asyncio.sleep(_SETTLE)
    try:
        b = await _broadcast(world, host, tally_a.received + devices, within)
    finally:
        stop.set()
        await probing
    during = probe_figures(busy, since=b["sent"], until=b["pushes"].last_at)

    pushes_a: MessagePushes = a["pushes"]
    pushes_b: MessagePushes = b["pushes"]
    last_a = pushes_a.last_at - a["acked"] if pushes_a.pushes else None
    last_b = pushes_b.last_at - b["acked"] if pushes_b.pushes else None
    per_1000 = a["server_cpu_s"] / pushes_a.pushes * 1000 if pushes_a.pushes else None
    window = max(pushes_a.last_at - a["sent"], 1e-9)
    before_subscriptions = probe_figures(bare)
    p99_change = p99_changes(during, baseline, before_subscriptions)
    from_send = [pushes_a.first_at - a["sent"], pushes_a.last_at - a["sent"]] if pushes_a.pushes else []
    return {
        "phase": f"push broadcast to {devices} devices",
        "messages": 2,
        "deliveries": pushes_a.pushes,
        "delivered_per_s": pushes_a.pushes / window,
        "latency_ms": percentiles(from_send),  # first and last push of A, from the send
        "latency_from_schedule_ms": percentiles(from_send),
        "send_response_ms": percentiles([a["acked"] - a["sent"]]),
        "server_cpu_s": a["server_cpu_s"],
        "server_cpu_s_per_1000": per_1000,
        "server_rss_mib": world.rss() / 2**20,
        "loadgen_cpu_percent": 100 * a["loadgen_cpu_s"] / a["wall_s"],
        "lost": 2 * devices - pushes_a.devices - pushes_b.devices + during["lost"] + baseline["lost"],
        "duplicated": pushes_a.pushes - pushes_a.devices + pushes_b.pushes - pushes_b.devices,
        "http_statuses": {},
        "send_errors": quiet.errors + busy.errors,
        "unacknowledged_sends": len(quiet.expected) - len(quiet.acked) + len(busy.expected) - len(busy.acked),
        "push_devices": devices,
        "push_users": users,
        "push_setup_s": setup_s,
        "push_devices_reached": [pushes_a.devices, pushes_b.devices],
        "push_pushes": [pushes_a.pushes, pushes_b.pushes],
        "last_push_after_ack_ms": None if last_a is None else 1000 * last_a,
        "last_push_after_ack_with_probe_ms": None if last_b is None else 1000 * last_b,
        "broadcast_ack_ms": 1000 * (a["acked"] - a["sent"]),
        "push_server_cpu_s_per_1000": per_1000,
        "double_cpu_s_per_1000": double_cpu_a / pushes_a.pushes * 1000 if pushes_a.pushes else None,
        "double_rejections": b["tally"].rejections,
        "double_rejection_reasons": b["tally"].reasons,
        "probe_rate": probe_rate,
        "probe_before_subscriptions": before_subscriptions,
        "probe_without_pushes": baseline,
        "probe_during_pushes": during,
        "probe_p99_change_percent": p99_change,
    }
