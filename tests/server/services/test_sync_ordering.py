"""Ordering under concurrency: a puller following the cursor while writers commit concurrently
sees every committed message exactly once and positions only ever increase.

A plain sequence or timestamp would fail this on PostgreSQL: two transactions can commit out of
order and a puller that already moved past the later position skips the earlier one forever.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import Stack
from tests.support import Member, Orgs

WRITERS_MESSAGES = 25


async def test_a_puller_sees_every_committed_change_once(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=2, medics=4)
    watcher = world.admins[0]
    start = (await orgs.get(watcher, "/v1/sync"))["next_cursor"]
    sent: list[str] = []
    writers_done = asyncio.Event()

    async def write(member: Member, index: int) -> None:
        for i in range(WRITERS_MESSAGES):
            target = member.conversation_id or world.medics[(index + i) % len(world.medics)].conversation_id
            assert target
            message = await orgs.send(member, target, f"w{index}-{i}")
            sent.append(message["id"])
            if i % 5 == 0:
                await stack.client.post(f"/v1/conversations/{target}/read", headers=member.headers)

    pulled: list[dict[str, Any]] = []

    async def pull() -> None:
        cursor = start
        while True:
            done = writers_done.is_set()  # read before the page: a page after this sees every write
            page = await orgs.get(watcher, "/v1/sync", cursor=cursor, limit=7)
            pulled.extend(page["changes"])
            cursor = page["next_cursor"]
            if done and not page["has_more"]:
                return

    puller = asyncio.create_task(pull())
    await asyncio.wait_for(asyncio.gather(*(write(m, i) for i, m in enumerate(world.members[1:]))), timeout=120)
    writers_done.set()
    await asyncio.wait_for(puller, timeout=60)

    positions = [c["position"] for c in pulled]
    assert positions == sorted(set(positions)), "positions must strictly increase along the feed"
    pulled_messages = [c["data"]["id"] for c in pulled if c["type"] == "message.created"]
    assert len(pulled_messages) == len(set(pulled_messages)), "a message was delivered twice"
    assert set(pulled_messages) == set(sent), "a committed message was skipped"
    assert len(sent) == WRITERS_MESSAGES * (len(world.members) - 1)
