"""A raw Phoenix channel client (supabase-js's wire, both serializers) for the realtime tests."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

WAIT = 10.0

Frame = tuple[str | None, str | None, str, str, Any]


class Phx:
    def __init__(self, ws: ClientConnection, vsn: str) -> None:
        self.ws, self.vsn = ws, vsn
        self._refs = itertools.count(1)

    def ref(self) -> str:
        return str(next(self._refs))

    async def push(
        self, topic: str, event: str, payload: Any, *, ref: str | None = None, join_ref: str | None = None
    ) -> str:
        ref = ref or self.ref()
        if self.vsn == "2.0.0":
            await self.ws.send(orjson.dumps([join_ref, ref, topic, event, payload]).decode())
        else:
            frame = {"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": join_ref}
            await self.ws.send(orjson.dumps(frame).decode())
        return ref

    async def recv(self) -> Frame:
        raw = await asyncio.wait_for(self.ws.recv(), WAIT)
        assert isinstance(raw, str), "the server sends text frames only"
        frame = orjson.loads(raw)
        if self.vsn == "2.0.0":
            assert isinstance(frame, list) and len(frame) == 5, frame
            return tuple(frame)  # type: ignore[return-value]
        assert isinstance(frame, dict) and set(frame) == {"join_ref", "ref", "topic", "event", "payload"}, frame
        return frame["join_ref"], frame["ref"], frame["topic"], frame["event"], frame["payload"]

    async def join(
        self, topic: str, bindings: list[Any], token: str | None, **broadcast: Any
    ) -> tuple[str, list[Frame]]:
        """Join; returns the join ref and the frames up to and including the reply."""
        payload: dict[str, Any] = {"config": {"broadcast": {"self": False, **broadcast}, "postgres_changes": bindings}}
        if token is not None:
            payload["access_token"] = token
        ref = self.ref()
        await self.push(topic, "phx_join", payload, ref=ref, join_ref=ref)
        frames = []
        while True:
            frame = await self.recv()
            frames.append(frame)
            if frame[3] == "phx_reply" and frame[1] == ref:
                return ref, frames

    async def until(self, event: str, topic: str | None = None) -> Frame:
        while True:
            frame = await self.recv()
            if frame[3] == event and (topic is None or frame[2] == topic):
                return frame


@asynccontextmanager
async def phx(base_url: str, vsn: str = "2.0.0", query: str = "") -> AsyncIterator[Phx]:
    url = base_url.replace("http", "ws") + f"/realtime/v1/websocket?apikey=anon&vsn={vsn}{query}"
    async with websockets.connect(url, max_size=2**22) as ws:
        yield Phx(ws, vsn)
