"""`Client.receipts`: a message's receipts from the server, decoded into the protocol's view.

Driven in-process (the SDK over `httpx.ASGITransport` into the test app), on both engines.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from sitecomms.client import Client, RequestRejected
from sitecomms.protocol.errors import ErrorCode
from sitecomms.protocol.models import ReaderView, ReceiptsView
from tests.conftest import Stack
from tests.server.api.test_conversations import mark_read
from tests.support import PASSWORD, Member, Orgs

BASE_URL = "http://sitecomms.test"


async def signed_in(stack: Stack, member: Member, tmp_path: Path) -> Client:
    transport = httpx.ASGITransport(app=stack.app, client=(stack.address, 40000))
    client = await Client.open(BASE_URL, tmp_path / f"{member.id}.db", transport=transport)
    await client.login(member.email, PASSWORD)
    return client


async def test_an_admin_gets_the_broadcasts_receipts_and_a_medic_is_refused(
    stack: Stack, orgs: Orgs, tmp_path: Path
) -> None:
    world = await orgs.make(admins=1, medics=3)
    admin, medic = world.admins[0], world.medics[0]
    sent = await orgs.send(admin, world.broadcast_id, "to everyone")
    await mark_read(stack, medic, world.broadcast_id)

    client = await signed_in(stack, admin, tmp_path)
    try:
        got = await client.receipts(world.broadcast_id, sent["id"])
    finally:
        await client.close()
    assert isinstance(got, ReceiptsView)
    assert (got.message_id, got.recipient_count, got.read_count) == (sent["id"], 3, 1)
    assert [(r.user_id, r.display_name) for r in got.read] == [(medic.id, medic.display_name)]
    assert all(isinstance(r, ReaderView) for r in got.read + got.unread)
    assert got.read[0].last_read_position >= sent["position"] and got.read[0].last_read_at is not None
    assert {r.user_id for r in got.unread} == {m.id for m in world.medics[1:]}

    client = await signed_in(stack, medic, tmp_path)
    try:
        with pytest.raises(RequestRejected) as refused:
            await client.receipts(world.broadcast_id, sent["id"])
    finally:
        await client.close()
    assert (refused.value.status, refused.value.code) == (403, ErrorCode.FORBIDDEN)
