"""A change whose bus notice never comes (its process died between the commit and the notice,
or the bus dropped it) still reaches the sockets of every other process, within the hub's
stream-head check (`SITECOMMS_WS_HEAD_CHECK_SECONDS`, 1 s), with no further write.

The first test's process plays the process that died: it commits a send through the services
with no publisher at all, so no notice is ever sent, what a SIGKILL right after the commit
leaves behind; the server has a socket open in that org and must deliver it by itself. The
second kills a real server at that instruction (its `send.committed` failpoint)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from sitecomms.server.services.messaging import Messaging
from sitecomms.server.services.publisher import NoPublisher
from sitecomms.server.services.visibility import Viewer
from tests.follower import Follower
from tests.server.realtime.test_channel import LIVE_WITHIN, running_site
from tests.server.realtime.test_multiprocess import REDIS_BUS, WAIT, seed
from tests.servers import BACKENDS, aserving, base_env, fresh_database

DELIVERED_WITHIN = 2.0  # seconds: the bound


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_commit_whose_notice_never_came_is_delivered_within_two_seconds(backend: str, tmp_path: Path) -> None:
    async with fresh_database(backend, tmp_path) as url, running_site(url, tmp_path / "serve.log") as site:
        world = await site.world(admins=1, medics=1)
        admin, medic = world.admins[0], world.medics[0]
        assert medic.conversation_id is not None
        receiver = await site.live(medic)
        try:
            silent = Messaging(site.db, NoPublisher())  # commits, and tells no one
            started = time.monotonic()
            sent = await silent.send(
                Viewer(admin.id, admin.org_id, admin.role), medic.conversation_id, "unannounced", "k1"
            )
            frames = await receiver.frames_until(lambda f: f.get("type") == "message.created", LIVE_WITHIN)
            took = time.monotonic() - started
        finally:
            await receiver.close()
        assert frames[-1]["data"]["id"] == sent.message.id
        assert took < DELIVERED_WITHIN, took


@pytest.mark.postgres
async def test_a_process_killed_right_after_a_commit_leaves_no_silent_gap(tmp_path: Path) -> None:
    """The real thing: process A, its `send.committed` failpoint armed, SIGKILLs itself right
    after the send's COMMIT, before its bus notice. Process B's socket gets the message within
    2 s, with no further write anywhere (PostgreSQL and Redis, as in production)."""
    async with fresh_database("postgresql", tmp_path) as url:
        admin, medic, _ = await asyncio.wait_for(seed(url), 120)
        env = base_env(url, SITECOMMS_BUS_URL=REDIS_BUS)
        async with (
            aserving({**env, "SITECOMMS_FAILPOINTS": "send.committed"}, tmp_path / "a.log") as a,
            aserving(env, tmp_path / "b.log") as b,
            httpx.AsyncClient(base_url=a.base_url, timeout=WAIT, trust_env=False) as http_a,
        ):
            listing = await http_a.get("/v1/conversations", headers=admin.auth())
            direct = next(c["id"] for c in listing.json()["conversations"] if c["medic_id"] == medic.id)
            receiver = await Follower("medic@B", medic, [b.base_url]).start()
            try:
                body = {
                    "conversation_id": direct,
                    "content": "committed, then the lights went out",
                    "idempotency_key": "k1",
                }
                started = time.monotonic()
                with pytest.raises(httpx.TransportError):  # A died before it could answer
                    await http_a.post("/v1/messages", json=body, headers=admin.auth())
                await receiver.until(lambda f: len(f.message_ids) == 1, "the committed message", within=WAIT)
                took = time.monotonic() - started
            finally:
                await receiver.stop()
            assert await asyncio.wait_for(asyncio.to_thread(a.process.wait), WAIT) == -signal.SIGKILL
            assert "failpoint send.committed reached" in a.log()
        assert took < DELIVERED_WITHIN, took
