"""`redis://`: Redis pub/sub on one channel; several processes or hosts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from sitecomms.bus.base import CHANNEL

_CONNECT_TIMEOUT = 5.0


class RedisBackend:
    def __init__(self, url: str) -> None:
        self._url = url
        self._client: Any = None
        self._pubsub: Any = None

    async def connect(self) -> None:
        import redis.asyncio as redis  # optional dependency, loaded only when used

        self._client = redis.Redis.from_url(self._url, socket_connect_timeout=_CONNECT_TIMEOUT)
        self._pubsub = self._client.pubsub()
        await self._pubsub.subscribe(CHANNEL)
        async with asyncio.timeout(_CONNECT_TIMEOUT):  # subscribed once Redis confirms it
            while True:
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
        assert self._pubsub is not None, "connect() first"
        while True:
            message = await self._pubsub.get_message(timeout=None)
            if message is not None and message.get("type") == "message":
                data = message["data"]
                yield data.decode() if isinstance(data, bytes) else str(data)
