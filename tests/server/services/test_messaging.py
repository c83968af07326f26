"""The send's checks, in the order the one read of `messages.send_context` allows."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from sitecomms.protocol.enums import Role
from sitecomms.server.services.errors import Unauthenticated
from sitecomms.server.services.messaging import Messaging
from sitecomms.server.services.publisher import NoPublisher
from sitecomms.server.services.visibility import Viewer
from tests.conftest import Stack
from tests.support import Orgs

TIMEOUT = 30.0


async def test_a_token_for_a_user_the_database_does_not_hold_sends_nothing(stack: Stack, orgs: Orgs) -> None:
    """Not a 404 for the conversation: the account is what is missing (401), even for a replayed key."""
    world = await orgs.make(medics=1)
    medic = world.medics[0]
    assert medic.conversation_id is not None
    messaging = Messaging(stack.db, NoPublisher())
    sent = await asyncio.wait_for(
        messaging.send(_as(medic.id, world.org_id), medic.conversation_id, "hi", "k1"), TIMEOUT
    )
    assert sent.created
    for user_id, org_id in ((str(uuid.uuid4()), world.org_id), (medic.id, str(uuid.uuid4()))):
        with pytest.raises(Unauthenticated):
            await asyncio.wait_for(messaging.send(_as(user_id, org_id), medic.conversation_id, "hi", "k1"), TIMEOUT)
    thread = await orgs.get(world.admins[0], f"/v1/conversations/{medic.conversation_id}/messages")
    assert [m["content"] for m in thread["messages"]] == ["hi"]


def _as(user_id: str, org_id: str) -> Viewer:
    return Viewer(user_id, org_id, Role.MEDIC, str(uuid.uuid4()))
