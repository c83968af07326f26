"""The push-service double (`push_service.PushService`) in a process of its own, for the push phase.

On two cores the double's ~165 µs of CPU per push (TLS and decryption, in Python) would compete
with the load generator's event loop if it ran in a thread there, and a thread would share the
generator's GIL; in its own process it competes only for a core, and its CPU is measured apart.
`PushHost` is the benchmark's handle: it starts the process (spawned: a fresh interpreter), which
answers a few requests over a pipe: subscriptions for a VAPID key, and a `Tally` of what was
received once a count is reached (or in time). Arrival times are the double's `time.monotonic()`,
on Linux the same `CLOCK_MONOTONIC` as the generator's `time.perf_counter()`, so they can be
subtracted from send times taken in other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sitecomms.bench.loadgen import own_cpu_seconds
from sitecomms.bench.push_service import PushService

_START_SECONDS = 60.0
_ANSWER_SLACK = 30.0  # beyond a request's own bound, before the host is declared stuck


@dataclass(frozen=True)
class MessagePushes:
    """The pushes one message caused, as the double accepted them."""

    pushes: int
    devices: int  # distinct subscriptions among them
    first_at: float
    last_at: float


@dataclass(frozen=True)
class Tally:
    received: int  # accepted pushes since the double started
    attempts: int  # every request, refused or not
    rejections: int
    reasons: list[str]  # a few refusal reasons, for the report
    cpu_seconds: float  # the double's process, since it started
    by_message: dict[str, MessagePushes] = field(default_factory=dict)  # by the payload's message_id


def serve(pipe: Any) -> None:
    """The host process: one PushService in a thread, answering requests from the pipe until "stop"."""
    with PushService() as service:
        pipe.send(("ready", service.origin, str(service.ca_file)))
        while True:
            request = pipe.recv()
            if request[0] == "stop":
                break
            if request[0] == "subscribe":
                _, key, count = request
                pipe.send([service.subscribe(key) for _ in range(count)])
            elif request[0] == "tally":
                _, count, within = request
                with contextlib.suppress(TimeoutError):  # what did not arrive is the phase's "lost"
                    service.wait_for_sync(count, within)
                pipe.send(_tally(service))
            else:
                pipe.send(ValueError(f"unknown request {request[0]!r}"))


def _tally(service: PushService) -> Tally:
    received = service.received
    attempts = service.attempts
    refused = [a for a in attempts if a.reason is not None]
    pushes: Counter[str] = Counter()
    devices: dict[str, set[str]] = {}
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for push in received:
        message_id = str(orjson.loads(push.payload or b"{}").get("message_id"))
        pushes[message_id] += 1
        devices.setdefault(message_id, set()).add(push.subscription_id)
        first[message_id] = min(first.get(message_id, push.at), push.at)
        last[message_id] = max(last.get(message_id, push.at), push.at)
    return Tally(
        received=len(received),
        attempts=len(attempts),
        rejections=len(refused),
        reasons=sorted({f"{a.status} {a.reason}" for a in refused})[:5],
        cpu_seconds=own_cpu_seconds(),
        by_message={m: MessagePushes(pushes[m], len(devices[m]), first[m], last[m]) for m in pushes},
    )


class PushHost:
    """The parent's side: start, subscribe, tally, stop. Use as a context manager."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=serve, args=(child,), name="push-double", daemon=True)
        self.origin = ""
        self.ca_file = Path()

    def __enter__(self) -> PushHost:
        self._process.start()
        if not self._pipe.poll(_START_SECONDS):
            self.close()
            raise RuntimeError(f"the push double did not start within {_START_SECONDS:.0f} s")
        _, self.origin, ca_file = self._pipe.recv()
        self.ca_file = Path(ca_file)
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _ask(self, request: tuple[Any, ...], within: float) -> Any:
        self._pipe.send(request)
        if not self._pipe.poll(within + _ANSWER_SLACK):
            raise TimeoutError(f"the push double did not answer {request[0]!r}")
        answer = self._pipe.recv()
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def subscribe(self, application_server_key: str, count: int) -> list[dict[str, Any]]:
        """`count` new subscriptions (PushSubscription JSON) bound to that VAPID key."""
        answer: list[dict[str, Any]] = await asyncio.to_thread(
            self._ask, ("subscribe", application_server_key, count), 60.0
        )
        return answer

    async def tally(self, count: int, within: float) -> Tally:
        """Once `count` pushes in all were accepted, or after `within` seconds: what was received."""
        answer: Tally = await asyncio.to_thread(self._ask, ("tally", count, within), within)
        return answer

    def close(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(OSError):
                self._pipe.send(("stop",))
            self._process.join(timeout=15)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=10)
        self._pipe.close()
