"""The demo organisation: 2 admins, 5 medics and a few messages, made once and reused."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sitecomms.protocol.enums import Role
from sitecomms.server.services.accounts import Accounts, NewUser
from sitecomms.server.services.errors import NotFound
from sitecomms.server.services.messaging import Messaging
from sitecomms.server.services.visibility import Viewer

DEMO_ORG = "Demo Field Team"
DEMO_PASSWORD = "demo-password"
ADMINS = [("admin@demo.example", "Alex Morgan"), ("admin2@demo.example", "Sam Okafor")]
MEDICS = [
    ("medic1@demo.example", "Maya Lindqvist"),
    ("medic2@demo.example", "Tomás Reyes"),
    ("medic3@demo.example", "Priya Nair"),
    ("medic4@demo.example", "Jonah Weller"),
    ("medic5@demo.example", "Aiko Tanaka"),
]


@dataclass(frozen=True, slots=True)
class DemoLogin:
    email: str
    display_name: str
    role: Role
    conversation_id: str | None


@dataclass(frozen=True, slots=True)
class Demo:
    org_id: str
    created: bool
    broadcast_id: str
    logins: list[DemoLogin]


async def ensure_demo(accounts: Accounts, messaging: Messaging) -> Demo:
    """Create the demo org unless it exists; either way, describe how to log in."""
    try:
        org = await accounts.find_org(DEMO_ORG)
        created = False
    except NotFound:
        org = await accounts.create_org(DEMO_ORG)
        created = True
        for email, name in ADMINS:
            await accounts.create_user(None, org.id, NewUser(email, name, Role.ADMIN, DEMO_PASSWORD))
        for email, name in MEDICS:
            await accounts.create_user(None, org.id, NewUser(email, name, Role.MEDIC, DEMO_PASSWORD))
    members = await accounts.members(org.id)
    admin = Viewer(next(u.id for u in members if u.role is Role.ADMIN), org.id, Role.ADMIN)
    listing = (await messaging.conversations(admin)).conversations
    direct = {c.medic_id: c.id for c in listing if c.medic_id is not None}
    broadcast_id = next(c.id for c in listing if c.medic_id is None)
    if created:
        by_email = {u.email: u.id for u in members}
        await _seed_messages(messaging, admin, [by_email[email] for email, _ in MEDICS], direct, broadcast_id)
    logins = [
        DemoLogin(u.email, u.display_name, u.role, direct.get(u.id))
        for u in sorted(members, key=lambda u: (u.role is not Role.ADMIN, u.email))
    ]
    return Demo(org_id=org.id, created=created, broadcast_id=broadcast_id, logins=logins)


async def _seed_messages(
    messaging: Messaging, admin: Viewer, medic_ids: list[str], direct: dict[str, str], broadcast_id: str
) -> None:
    async def say(viewer: Viewer, conversation_id: str, text: str) -> None:
        await messaging.send(viewer, conversation_id, text, f"demo-{uuid.uuid4()}")

    maya = Viewer(medic_ids[0], admin.org_id, Role.MEDIC)
    tomas = Viewer(medic_ids[1], admin.org_id, Role.MEDIC)
    await say(maya, direct[maya.user_id], "Arrived at site B. Two minor injuries, both treated.")
    await say(admin, direct[maya.user_id], "Thanks Maya. Do you need more dressings?")
    await say(maya, direct[maya.user_id], "Yes please, one box of large dressings.")
    await say(tomas, direct[tomas.user_id], "Checking in from the north gate, all quiet.")
    await say(admin, broadcast_id, "Reminder: radio check at 14:00 on channel 3.")
