"""A change whose bus notice never comes (its process died between the commit and the notice,
or the bus dropped it) still reaches the sockets of every other process, within the hub's
stream-head check (`SITECOMMS_WS_HEAD_CHECK_SECONDS`, 1 s), with no further write.

The test process plays the process that died: it commits a send through the services with no
publisher at all, so no notice is ever sent, exactly what a SIGKILL right after the commit
leaves behind; the server has a socket open in that org and must deliver it by itself."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sitecomms.server.services.messaging import Messaging
from sitecomms.server.services.publisher import NoPublisher
from sitecomms.server.services.visibility import Viewer
from tests.server.realtime.test_channel import LIVE_WITHIN, running_site
from tests.servers import BACKENDS, fresh_database

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
