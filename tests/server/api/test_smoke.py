from __future__ import annotations

from tests.support import Orgs


async def test_medic_sends_and_admin_sees_it(orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    medic, admin = world.medics[0], world.admins[0]
    assert medic.conversation_id is not None
    sent = await orgs.send(medic, medic.conversation_id, "hello")
    listing = await orgs.get(admin, "/v1/conversations")
    direct = next(c for c in listing["conversations"] if c["id"] == medic.conversation_id)
    assert direct["last_message_preview"] == "hello"
    assert direct["unread_count"] == 1
    assert direct["name"] == medic.display_name
    assert sent["sender_name"] == medic.display_name
