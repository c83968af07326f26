"""The services obey `protocol.rules` for every caller, not only HTTP (the CLI and the demo call them directly)."""

from __future__ import annotations

import uuid

import pytest

from sitecomms.protocol import limits
from sitecomms.protocol.enums import Role
from sitecomms.server.services.accounts import NewUser
from sitecomms.server.services.errors import InvalidInput
from sitecomms.server.services.messaging import Messaging
from sitecomms.server.services.publisher import NoPublisher
from tests.conftest import Stack
from tests.support import Orgs


def _email() -> str:
    return f"{uuid.uuid4().hex[:10]}@rules.example"


async def test_operator_paths_obey_the_account_rules(stack: Stack) -> None:
    accounts = stack.accounts
    with pytest.raises(InvalidInput, match="organisation name: must not be empty"):
        await accounts.create_org("  \t ")
    org = await accounts.create_org(f"  Rules {uuid.uuid4().hex[:6]}  ")
    assert org.name == org.name.strip()

    refused = {
        "display_name: must not be empty": NewUser(_email(), "   ", Role.MEDIC, "long enough"),
        "display_name: must be at most": NewUser(
            _email(), "n" * (limits.MAX_DISPLAY_NAME_CHARS + 1), Role.MEDIC, "x" * 9
        ),
        f"password: must be at least {limits.MIN_PASSWORD_CHARS}": NewUser(_email(), "Short Pass", Role.MEDIC, "short"),
        "password: is one of the most common": NewUser(_email(), "Common Pass", Role.MEDIC, "Password123"),
        "display_name: 'Admin' is reserved": NewUser(_email(), "Admin", Role.ADMIN, "long enough"),
        r"display_name: must not contain bidirectional control characters \(found U\+202E\)": NewUser(
            _email(), "Rosa\u202e", Role.MEDIC, "long enough"
        ),
        "email: must look like": NewUser("not an email", "Bad Email", Role.MEDIC, "long enough"),
        "display_name: must not contain NUL": NewUser(_email(), "a\x00b", Role.ADMIN, "long enough"),
    }
    for says, new in refused.items():
        with pytest.raises(InvalidInput, match=says):
            await accounts.create_user(None, org.id, new)

    created = await accounts.create_user(None, org.id, NewUser(_email().upper(), "  Rosa  ", Role.MEDIC, "long enough"))
    assert (created.display_name, created.email) == ("Rosa", created.email.lower())


async def test_a_send_obeys_the_content_rules_below_http(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    medic = world.medics[0]
    assert medic.conversation_id
    messaging = Messaging(stack.db, NoPublisher())
    for content, says in [
        ("   ", "content: must not be empty"),
        ("x" * (limits.MAX_CONTENT_CHARS + 1), "at most"),
        ("\x1b[31mred", r"content: must not contain control characters \(found U\+001B\)"),
    ]:
        with pytest.raises(InvalidInput, match=says):
            await messaging.send(medic.viewer, medic.conversation_id, content, uuid.uuid4().hex)
    with pytest.raises(InvalidInput, match="idempotency_key: must not be empty"):
        await messaging.send(medic.viewer, medic.conversation_id, "fine", "")
    sent = await messaging.send(medic.viewer, medic.conversation_id, "  kept as typed \n", uuid.uuid4().hex)
    assert sent.created and sent.message.content == "  kept as typed \n"
    crlf = await messaging.send(medic.viewer, medic.conversation_id, "one\r\ntwo\r", uuid.uuid4().hex)
    assert crlf.message.content == "one\ntwo\n"
