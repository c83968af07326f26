"""The directory, /v1/me, admin-only user creation and renames."""

from __future__ import annotations

import uuid

from tests.conftest import Stack
from tests.support import Orgs


def new_user(role: str = "medic", **overrides: str) -> dict[str, str]:
    return {
        "email": f"{uuid.uuid4().hex[:10]}@new.example",
        "display_name": "New Person",
        "role": role,
        "password": "long enough password",
        **overrides,
    }


async def test_admin_creates_a_medic_who_gets_a_direct_conversation(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=0)
    admin = world.admins[0]
    payload = new_user(display_name="Rosa Field")
    created = await stack.client.post("/v1/users", json=payload, headers=admin.headers)
    assert created.status_code == 201, created.text
    user = created.json()
    assert (user["role"], user["org_id"], user["display_name"]) == ("medic", world.org_id, "Rosa Field")
    assert "password" not in created.text

    listing = (await orgs.get(admin, "/v1/conversations"))["conversations"]
    direct = [c for c in listing if c["medic_id"] == user["id"]]
    assert len(direct) == 1
    assert direct[0]["name"] == "Rosa Field"

    login = await stack.client.post("/v1/auth/login", json={"email": payload["email"], "password": payload["password"]})
    assert login.status_code == 200


async def test_admin_creates_an_admin_without_a_conversation(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=0)
    before = len((await orgs.get(world.admins[0], "/v1/conversations"))["conversations"])
    created = await stack.client.post("/v1/users", json=new_user("admin"), headers=world.admins[0].headers)
    assert created.status_code == 201
    assert len((await orgs.get(world.admins[0], "/v1/conversations"))["conversations"]) == before


async def test_medics_cannot_create_users(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    refused = await stack.client.post("/v1/users", json=new_user(), headers=world.medics[0].headers)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert len((await orgs.get(world.admins[0], "/v1/users"))["users"]) == 2


async def test_duplicate_email_is_a_conflict(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    taken = new_user(email=world.medics[0].email.upper())
    response = await stack.client.post("/v1/users", json=taken, headers=world.admins[0].headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


async def test_bad_user_input_is_422(stack: Stack, orgs: Orgs) -> None:
    admin = (await orgs.make(admins=1, medics=0)).admins[0]
    for payload in (
        new_user(email="no-at-sign"),
        new_user(password="short"),
        new_user(role="superuser"),
        new_user(display_name="   "),
        new_user(display_name="Admin"),
        new_user(display_name="Rosa\u202eleiF"),
        new_user(password="password123"),
        new_user(email="a@b"),
        {**new_user(), "org_id": str(uuid.uuid4())},
    ):
        response = await stack.client.post("/v1/users", json=payload, headers=admin.headers)
        assert response.status_code == 422, payload
        assert response.json()["error"]["code"] == "validation_failed"


async def test_directory_for_admins_and_medics(orgs: Orgs) -> None:
    world = await orgs.make(admins=2, medics=3)
    await orgs.make(admins=1, medics=1)  # another org, never listed
    admin_sees = {u["id"] for u in (await orgs.get(world.admins[0], "/v1/users"))["users"]}
    assert admin_sees == {m.id for m in world.members}
    medic = world.medics[1]
    assert [u["id"] for u in (await orgs.get(medic, "/v1/users"))["users"]] == [medic.id]


async def test_renames_by_self_and_by_admin(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=2)
    admin, medic, neighbour = world.admins[0], world.medics[0], world.medics[1]
    own = await stack.client.patch(f"/v1/users/{medic.id}", json={"display_name": "Dr Field"}, headers=medic.headers)
    assert own.status_code == 200
    assert own.json()["display_name"] == "Dr Field"
    listing = (await orgs.get(admin, "/v1/conversations"))["conversations"]
    assert any(c["id"] == medic.conversation_id and c["name"] == "Dr Field" for c in listing)

    by_admin = await stack.client.patch(
        f"/v1/users/{neighbour.id}", json={"display_name": "Renamed"}, headers=admin.headers
    )
    assert by_admin.status_code == 200
    hidden = await stack.client.patch(f"/v1/users/{neighbour.id}", json={"display_name": "x"}, headers=medic.headers)
    assert hidden.status_code == 404


async def test_names_that_read_as_admin_or_hide_text_are_refused(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    medic = world.medics[0]
    for name, says in [
        ("Admin", "is reserved"),
        ("\u0410dmin", "is reserved"),  # Cyrillic A
        ("a d m 1 n", "is reserved"),
        ("Maya\nAdmin", "control characters (found U+000A)"),
        ("Maya\u202e", "bidirectional control characters (found U+202E)"),
        ("\u3164", "invisible characters"),
    ]:
        refused = await stack.client.patch(f"/v1/users/{medic.id}", json={"display_name": name}, headers=medic.headers)
        assert refused.status_code == 422, (name, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "validation_failed" and says in error["message"], (name, error)
    me = await orgs.get(medic, "/v1/me")
    assert me["user"]["display_name"] == medic.display_name, "nothing was renamed"
    kept = await stack.client.patch(
        f"/v1/users/{medic.id}", json={"display_name": "\uff2d\uff41\uff59\uff41"}, headers=medic.headers
    )
    assert kept.status_code == 200 and kept.json()["display_name"] == "Maya", "stored NFKC-normalised"
