"""The live feed's org-wide read: every change of one org, nothing of another, gapless in pages.

The hub reads with `Feed.read` whatever it was not handed directly (commits by other processes,
renames, new users). Here it is held to an admin's pull sync of the same org, which sees every
change of the org through the visibility clauses: the same positions, table by table, whether
read in one go or in pages of 3.
"""

from __future__ import annotations

import asyncio

from sitecomms.protocol.cursors import Cursor
from sitecomms.protocol.enums import ChangeType
from sitecomms.server.services.feed import Feed
from tests.conftest import Stack
from tests.support import Orgs

TIMEOUT = 60.0


async def test_the_feed_reads_exactly_one_orgs_changes_in_order_and_in_pages(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=2, medics=2)
    other = await orgs.make(admins=1, medics=1)  # its changes interleave in time, never in the feed
    admin, medic = world.admins[0], world.medics[0]
    assert medic.conversation_id and other.medics[0].conversation_id
    for i in range(4):
        await orgs.send(medic, medic.conversation_id, f"m{i}")
        await orgs.send(other.medics[0], other.medics[0].conversation_id, f"o{i}")
    await orgs.send(admin, world.broadcast_id, "to everyone")
    read = await stack.client.post(f"/v1/conversations/{medic.conversation_id}/read", headers=admin.headers, json={})
    assert read.status_code == 200, read.text
    renamed = await stack.client.patch(f"/v1/users/{medic.id}", headers=admin.headers, json={"display_name": "New"})
    assert renamed.status_code == 200, renamed.text

    expected = {(c["type"], c["position"]) for c in (await orgs.sync_all(admin, str(Cursor(0, world.org_id))))[0]}
    feed = Feed(stack.db)
    whole = await asyncio.wait_for(feed.read(world.org_id, 0, 1000), TIMEOUT)
    assert not whole.has_more
    got = [(item.type.value, item.position) for item in whole.items]
    assert got == sorted(got, key=lambda pair: pair[1]), "in position order"
    assert set(got) == expected, "the admin's sync sees the same changes"
    assert all(item.org_id == world.org_id for item in whole.items)
    assert {ChangeType(kind) for kind, _ in got} == set(ChangeType), "every kind of change was read"

    paged: list[tuple[str, int]] = []
    after = 0
    while True:
        batch = await asyncio.wait_for(feed.read(world.org_id, after, 3), TIMEOUT)
        assert len(batch.items) <= 3
        paged += [(item.type.value, item.position) for item in batch.items]
        after = batch.upto
        if not batch.has_more:
            break
    assert paged == got, "pages of 3 read the same changes, gapless"
    assert after == whole.upto
