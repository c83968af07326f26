"""The PostgreSQL listener ends when it is cancelled, even as a notice arrives (the bus closing
while its own notice comes back). With `asyncio.wait_for` on Python 3.11 the cancellation was
lost, the listener task never ended, and `sitecomms user deactivate` on a PostgreSQL bus hung."""

from __future__ import annotations

import asyncio

import pytest

from sitecomms.bus.postgres import PostgresBackend
from tests.bus.test_backends import POSTGRES_URL

pytestmark = pytest.mark.postgres

WAIT = 10.0


async def test_a_cancel_that_meets_a_notice_still_ends_the_listener() -> None:
    backend = PostgresBackend(POSTGRES_URL, heartbeat_seconds=30)
    async with asyncio.timeout(WAIT):
        await backend.connect()
    try:
        listening = backend.listen()
        waiting = asyncio.create_task(anext(listening))
        await asyncio.sleep(0)  # the listener now waits for its inbox
        backend._on_notify(None, 0, "", "org 1")  # a notice arrives...
        waiting.cancel()  # ...in the same turn as the cancellation
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(WAIT):
                await waiting
        await listening.aclose()
    finally:
        await backend.close()
