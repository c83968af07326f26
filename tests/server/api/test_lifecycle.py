"""Account lifecycle: deactivation and reactivation, promotion and demotion, password reset and
change; the last active admin is kept; users are never deleted by a cascade."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from tests.conftest import Stack
from tests.sql import execute
from tests.support import PASSWORD, Member, Orgs

NEW_PASSWORD = "a fresh passphrase 42"


async def _login(stack: Stack, email: str, password: str = PASSWORD) -> httpx.Response:
    return await stack.client.post("/v1/auth/login", json={"email": email, "password": password})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _signed_in(stack: Stack, member: Member) -> dict[str, Any]:
    response = await _login(stack, member.email)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_a_deactivated_medic_loses_every_access_and_keeps_their_history(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=2)
    admin, medic = world.admins[0], world.medics[0]
    assert medic.conversation_id is not None
    sent = await orgs.send(medic, medic.conversation_id, "the last words before leaving")
    phone = await _signed_in(stack, medic)

    response = await stack.client.post(f"/v1/users/{medic.id}/deactivate", headers=admin.headers)
    assert response.status_code == 200, response.text
    assert response.json()["active"] is False

    for token in (medic.token, phone["access_token"]):
        for path in ("/v1/me", "/v1/conversations", "/v1/users", "/v1/sync"):
            assert (await stack.client.get(path, headers=_bearer(token))).status_code == 401, path
        read = await stack.client.post(f"/v1/conversations/{medic.conversation_id}/read", headers=_bearer(token))
        assert read.status_code == 401
    refreshed = await stack.client.post("/v1/auth/refresh", json={"refresh_token": phone["refresh_token"]})
    assert refreshed.status_code == 401
    # Sign-in is refused with the same answer as a wrong password.
    refused, wrong = await _login(stack, medic.email), await _login(stack, world.medics[1].email, "not it at all")
    assert refused.status_code == wrong.status_code == 401
    assert refused.json() == wrong.json()
    # Their messages stay, under their name, for the admins.
    thread = await orgs.get(admin, f"/v1/conversations/{medic.conversation_id}/messages")
    kept = next(m for m in thread["messages"] if m["id"] == sent["id"])
    assert kept["sender_name"] == medic.display_name and kept["content"] == "the last words before leaving"
    listed = {u["id"]: u for u in (await orgs.get(admin, "/v1/users"))["users"]}
    assert listed[medic.id]["active"] is False

    back = await stack.client.post(f"/v1/users/{medic.id}/reactivate", headers=admin.headers)
    assert back.status_code == 200 and back.json()["active"] is True
    assert (await _login(stack, medic.email)).status_code == 200
    assert (await stack.client.get("/v1/me", headers=_bearer(phone["access_token"]))).status_code == 401


async def test_a_deactivated_admin_cannot_create_accounts(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=2, medics=0)
    boss, leaver = world.admins
    assert (await stack.client.post(f"/v1/users/{leaver.id}/deactivate", headers=boss.headers)).status_code == 200
    created = await stack.client.post(
        "/v1/users",
        headers=leaver.headers,
        json={"email": "new.admin@site.example", "display_name": "Mallory", "role": "admin", "password": NEW_PASSWORD},
    )
    assert created.status_code == 401
    assert (await _login(stack, "new.admin@site.example", NEW_PASSWORD)).status_code == 401


async def test_the_last_active_admin_is_kept(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=2, medics=1)
    first, second = world.admins
    assert (await stack.client.post(f"/v1/users/{second.id}/deactivate", headers=first.headers)).status_code == 200
    for attempt in (
        stack.client.post(f"/v1/users/{first.id}/deactivate", headers=first.headers),
        stack.client.put(f"/v1/users/{first.id}/role", headers=first.headers, json={"role": "medic"}),
    ):
        response = await attempt
        assert response.status_code == 409, response.text
        assert "last active admin" in response.json()["error"]["message"]
    assert (await stack.client.get("/v1/me", headers=first.headers)).status_code == 200


async def test_two_admins_removing_each_other_at_once_leave_one(stack: Stack, orgs: Orgs) -> None:
    # On PostgreSQL both transactions used to count two active admins and both went ahead.
    for change in ("deactivate", "demote"):
        for _ in range(3):
            world = await orgs.make(admins=2, medics=0)
            first, second = world.admins

            async def remove(actor: Member, target: Member, change: str = change) -> int:
                if change == "deactivate":
                    response = await stack.client.post(f"/v1/users/{target.id}/deactivate", headers=actor.headers)
                else:
                    response = await stack.client.put(
                        f"/v1/users/{target.id}/role", headers=actor.headers, json={"role": "medic"}
                    )
                return response.status_code

            async with asyncio.timeout(30):
                outcomes = await asyncio.gather(remove(first, second), remove(second, first))
            # the loser is refused: the last admin (409), or already signed out by the winner (401)
            assert outcomes.count(200) == 1 and set(outcomes) - {200} <= {401, 409}, (change, outcomes)
            listed = await stack.client.get("/v1/users", headers=(first if outcomes[0] == 200 else second).headers)
            admins = [u for u in listed.json()["users"] if u["role"] == "admin" and u["active"]]
            assert len(admins) == 1, (change, admins)


async def test_an_admin_cannot_reset_their_own_password_without_the_current_one(stack: Stack, orgs: Orgs) -> None:
    admin = (await orgs.make(admins=1, medics=0)).admins[0]
    response = await stack.client.post(
        f"/v1/users/{admin.id}/password", headers=admin.headers, json={"password": NEW_PASSWORD}
    )
    assert response.status_code == 403 and "/v1/me/password" in response.json()["error"]["message"]
    assert (await stack.client.get("/v1/me", headers=admin.headers)).status_code == 200  # nothing revoked
    assert (await _login(stack, admin.email)).status_code == 200  # the password is unchanged


async def test_promotion_and_demotion_take_effect_on_the_next_refresh(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=2)
    admin, medic = world.admins[0], world.medics[0]
    phone = await _signed_in(stack, medic)
    promoted = await stack.client.put(f"/v1/users/{medic.id}/role", headers=admin.headers, json={"role": "admin"})
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
    # The old token claims "medic": refused, and the refresh issues one that says "admin".
    assert (await stack.client.get("/v1/me", headers=_bearer(phone["access_token"]))).status_code == 401
    fresh = (await stack.client.post("/v1/auth/refresh", json={"refresh_token": phone["refresh_token"]})).json()
    assert fresh["user"]["role"] == "admin"
    everyone = await stack.client.get("/v1/users", headers=_bearer(fresh["access_token"]))
    assert len(everyone.json()["users"]) == 3
    demoted = await stack.client.put(f"/v1/users/{medic.id}/role", headers=admin.headers, json={"role": "medic"})
    assert demoted.status_code == 200
    assert (await stack.client.get("/v1/users", headers=_bearer(fresh["access_token"]))).status_code == 401


async def test_a_demoted_admin_gets_a_direct_conversation(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=2, medics=0)
    boss, other = world.admins
    assert (
        await stack.client.put(f"/v1/users/{other.id}/role", headers=boss.headers, json={"role": "medic"})
    ).status_code == 200
    conversations = (await orgs.get(boss, "/v1/conversations"))["conversations"]
    assert any(c["medic_id"] == other.id for c in conversations)


async def test_an_admin_reset_signs_the_user_out_everywhere(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    admin, medic = world.admins[0], world.medics[0]
    phone = await _signed_in(stack, medic)
    reset = await stack.client.post(
        f"/v1/users/{medic.id}/password", headers=admin.headers, json={"password": NEW_PASSWORD}
    )
    assert reset.status_code == 204
    assert (await stack.client.get("/v1/me", headers=_bearer(phone["access_token"]))).status_code == 401
    assert (await _login(stack, medic.email)).status_code == 401
    assert (await _login(stack, medic.email, NEW_PASSWORD)).status_code == 200


async def test_changing_my_password_signs_my_other_devices_out(stack: Stack, orgs: Orgs) -> None:
    medic = (await orgs.make(medics=1)).medics[0]
    phone, laptop = await _signed_in(stack, medic), await _signed_in(stack, medic)
    wrong = await stack.client.post(
        "/v1/me/password",
        headers=_bearer(phone["access_token"]),
        json={"current_password": "not my password", "new_password": NEW_PASSWORD},
    )
    assert wrong.status_code == 403
    weak = await stack.client.post(
        "/v1/me/password",
        headers=_bearer(phone["access_token"]),
        json={"current_password": PASSWORD, "new_password": "password123"},
    )
    assert weak.status_code == 422
    changed = await stack.client.post(
        "/v1/me/password",
        headers=_bearer(phone["access_token"]),
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 204, changed.text
    assert (await stack.client.get("/v1/me", headers=_bearer(phone["access_token"]))).status_code == 200
    assert (await stack.client.get("/v1/me", headers=_bearer(laptop["access_token"]))).status_code == 401
    assert (await _login(stack, medic.email, NEW_PASSWORD)).status_code == 200


@pytest.mark.parametrize("action", ["deactivate", "reactivate", "role", "password", "rename"])
async def test_medics_and_other_orgs_cannot_manage_users(stack: Stack, orgs: Orgs, action: str) -> None:
    world, other = await orgs.make(medics=2), await orgs.make(medics=1)
    target = world.medics[0]
    for caller, expected in ((world.medics[1], {403, 404}), (other.admins[0], {404}), (other.medics[0], {404})):
        path, method, body = {
            "deactivate": (f"/v1/users/{target.id}/deactivate", "POST", None),
            "reactivate": (f"/v1/users/{target.id}/reactivate", "POST", None),
            "role": (f"/v1/users/{target.id}/role", "PUT", {"role": "admin"}),
            "password": (f"/v1/users/{target.id}/password", "POST", {"password": NEW_PASSWORD}),
            "rename": (f"/v1/users/{target.id}", "PATCH", {"display_name": "Taken Over"}),
        }[action]
        response = await stack.client.request(method, path, headers=caller.headers, json=body)
        assert response.status_code in expected, (caller.display_name, response.text)
    assert (await stack.client.get("/v1/me", headers=target.headers)).json()["user"]["display_name"] == (
        target.display_name
    )
    assert (await _login(stack, target.email)).status_code == 200


async def test_users_are_never_deleted_by_a_cascade(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(medics=1)
    medic = world.medics[0]
    assert medic.conversation_id is not None
    await orgs.send(medic, medic.conversation_id, "keep me")

    def delete(conn: Any) -> None:
        execute(conn, text("DELETE FROM users WHERE id = :id"), {"id": medic.id})

    with pytest.raises(IntegrityError):
        await stack.db.write("test_delete_user", delete)
    thread = await orgs.get(world.admins[0], f"/v1/conversations/{medic.conversation_id}/messages")
    assert [m["content"] for m in thread["messages"]] == ["keep me"]


async def test_a_keep_alive_connection_survives_a_refused_read_mark(stack: Stack, orgs: Orgs) -> None:
    """Once, a read mark by a removed user answered 500 and dropped the connection."""
    world = await orgs.make(medics=1)
    admin, medic = world.admins[0], world.medics[0]
    assert (await stack.client.post(f"/v1/users/{medic.id}/deactivate", headers=admin.headers)).status_code == 200
    response = await stack.client.post(f"/v1/conversations/{medic.conversation_id}/read", headers=medic.headers)
    assert response.status_code == 401
    assert (await stack.client.get("/v1/me", headers=admin.headers)).status_code == 200
