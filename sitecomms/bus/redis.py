"""`redis://`: Redis pub/sub on one channel; several processes or hosts.

The Redis client is the `redis` extra (`pip install 'sitecomms[redis]'`), imported when a
backend is built: a server given a `redis://` bus without it stops at start-up with that line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from sitecomms.bus.base import CHANNEL
from sitecomms.extras import require

_CONNECT_TIMEOUT = 5.0


class RedisBackend:
    def __init__(self, url: str, *, heartbeat_seconds: float = 10.0) -> None:
        self._redis: Any = require("redis.asyncio", "the redis:// bus")
        self._url = url
        self._heartbeat = heartbeat_seconds
        self._client: Any = None
        self._pubsub: Any = None

    async def connect(self) -> None:
        self._client = self._redis.Redis.from_url(self._url, socket_connect_timeout=_CONNECT_TIMEOUT)
        self._pubsub = self._client.pubsub()
        # The whole handshake is bounded: a broker that accepts TCP but never answers is down too.
        async with asyncio.timeout(_CONNECT_TIMEOUT):
            await self._pubsub.subscribe(CHANNEL)
            while True:  # subscribed once Redis confirms it
                message = await self._pubsub.get_message(timeout=_CONNECT_TIMEOUT)
                if message is not None and message.get("type") == "subscribe":
                    return

    async def close(self) -> None:
        pubsub, client, self._pubsub, self._client = self._pubsub, self._client, None, None
        if pubsub is not None:
            await pubsub.aclose()
        if client is not None:
            await client.aclose()

    async def publish(self, payload: str) -> None:
        assert self._client is not None, "connect() first"
        await self._client.publish(CHANNEL, payload)

    async def listen(self) -> AsyncIterator[str]:
        """Yield payloads; after a quiet heartbeat, PING, and fail if the next one stays silent too.

        Without the PING a connection that died without a FIN (a NAT or firewall dropping it, a
        frozen host) would leave the listener waiting forever, deaf to every notice.
        """
        assert self._pubsub is not None, "connect() first"
        awaiting_pong = False
        while True:
            message = await self._pubsub.get_message(timeout=self._heartbeat)
            if message is None:
                if awaiting_pong:
                    raise ConnectionError(f"Redis did not answer a PING within {self._heartbeat:g}s")
                await self._pubsub.ping()
                awaiting_pong = True
                continue
            awaiting_pong = False  # anything from the server proves the connection alive
            if message.get("type") == "message":
                data = message["data"]
                yield data.decode() if isinstance(data, bytes) else str(data)
