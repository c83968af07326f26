"""Senders that keep going through a failover (as the users of `test_multiprocess.seed`).

`send_until_acked` posts one message and, on a 502/503/504 or a transport error, posts it again
with the same idempotency key (backing off, bounded) until the server acknowledges it: 201, or
200 when an earlier attempt had committed. `Sends` records every acknowledgement and every failed
attempt. The receivers, which reconnect from their cursor, are `tests.follower.Follower`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from sitecomms.protocol.backoff import Backoff
from tests.server.realtime.test_multiprocess import User

WAIT = 15.0  # seconds for any one thing to happen
RETRY = Backoff(base=0.05, cap=1.0)  # quicker than the SDK's policy: the test is short
SEND_ATTEMPTS = 20  # per message; the backoff's sum stays well under a minute
RETRYABLE = frozenset({502, 503, 504})  # the balancer's answers when no backend could answer


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
