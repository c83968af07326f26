"""`GET /v1/audit`: every audited action shows up for the org's admins, with who did what to whom,
from which device and address; medics are refused; nobody sees another org's events."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from sitecomms.protocol.enums import AuditKind
from tests.conftest import Stack
from tests.support import PASSWORD, Member, Orgs


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD, device: str = "phone") -> Any:
    response = await client.post("/v1/auth/login", json={"email": email, "password": password, "device": device})
    assert response.status_code == 200, response.text
    return response.json()


async def events(stack: Stack, admin: Member, **params: Any) -> list[dict[str, Any]]:
    response = await stack.client.get("/v1/audit", headers=admin.headers, params=params or None)
    assert response.status_code == 200, response.text
    page = response.json()
    assert set(page) == {"events", "next_before", "has_more"}
    return list(page["events"])


def only(found: list[dict[str, Any]], kind: AuditKind, **expected: Any) -> dict[str, Any]:
    """The one event of `kind` whose fields include `expected`."""
    matching = [e for e in found if e["kind"] == kind.value and all(e[k] == v for k, v in expected.items())]
    assert len(matching) == 1, (kind, expected, found)
    return matching[0]


async def test_every_action_is_audited_with_actor_subject_session_and_address(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    admin, medic = world.admins[0], world.medics[0]
    client = stack.client

    refused = await client.post("/v1/auth/login", json={"email": medic.email, "password": "wrong password"})
    assert refused.status_code == 401
    signed_in = await login(client, medic.email, device="field phone")
    medic_session = signed_in["session_id"]

    first = await login(client, medic.email, device="tablet")  # refreshed twice, then its first token replayed
    second = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    third = await client.post("/v1/auth/refresh", json={"refresh_token": second.json()["refresh_token"]})
    assert third.status_code == 200, third.text
    replayed = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replayed.status_code == 401

    laptop = await login(client, medic.email, device="laptop")
    assert (await client.delete(f"/v1/sessions/{laptop['session_id']}", headers=admin.headers)).status_code == 204
    desk = await login(client, medic.email, device="desk")
    assert (await client.post("/v1/auth/logout", headers=bearer(desk["access_token"]))).status_code == 204

    renamed = await client.patch(f"/v1/users/{medic.id}", json={"display_name": "Dr Field"}, headers=admin.headers)
    assert renamed.status_code == 200, renamed.text
    changed = await client.post(
        "/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "a brand new password"},
        headers=bearer(signed_in["access_token"]),
    )
    assert changed.status_code == 204, changed.text
    reset = await client.post(f"/v1/users/{medic.id}/password", json={"password": PASSWORD}, headers=admin.headers)
    assert reset.status_code == 204, reset.text
    promoted = await client.put(f"/v1/users/{medic.id}/role", json={"role": "admin"}, headers=admin.headers)
    assert promoted.status_code == 200, promoted.text
    assert (await client.post(f"/v1/users/{medic.id}/deactivate", headers=admin.headers)).status_code == 200
    assert (await client.post(f"/v1/users/{medic.id}/reactivate", headers=admin.headers)).status_code == 200
    again = await login(client, medic.email, device="again")
    revoked_all = await client.delete(f"/v1/users/{medic.id}/sessions", headers=admin.headers)
    assert revoked_all.status_code == 200, revoked_all.text
    created = await client.post(
        "/v1/users",
        json={
            "email": f"{uuid.uuid4().hex[:10]}@new.example",
            "display_name": "New",
            "role": "medic",
            "password": PASSWORD,
        },
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text

    found = await events(stack, admin, limit=200)
    assert [e["id"] for e in found] == sorted((e["id"] for e in found), reverse=True)  # newest first
    failed = only(found, AuditKind.SIGN_IN_FAILED, subject_id=medic.id)
    assert (failed["actor_id"], failed["address"], failed["detail"]["email"]) == (None, stack.address, medic.email)
    assert failed["detail"]["reason"] == "wrong"
    sign_in = only(found, AuditKind.SIGN_IN, session_id=medic_session)
    assert (sign_in["actor_id"], sign_in["subject_id"], sign_in["address"]) == (medic.id, medic.id, stack.address)
    assert sign_in["detail"]["device"] == "field phone"
    reused = only(found, AuditKind.REFRESH_REUSED, session_id=first["session_id"])
    assert (reused["subject_id"], reused["address"], reused["detail"]) == (
        medic.id,
        stack.address,
        {"rotations_behind": 2},
    )
    revoked = only(found, AuditKind.SESSION_REVOKED, session_id=laptop["session_id"])
    assert (revoked["actor_id"], revoked["subject_id"], revoked["detail"]) == (admin.id, medic.id, {"device": "laptop"})
    signed_out = only(found, AuditKind.SIGN_OUT, session_id=desk["session_id"])
    assert (signed_out["actor_id"], signed_out["subject_id"]) == (medic.id, medic.id)
    rename = only(found, AuditKind.USER_RENAMED, subject_id=medic.id)
    assert (rename["actor_id"], rename["detail"]["new"]) == (admin.id, "Dr Field")
    change = only(found, AuditKind.PASSWORD_CHANGED, subject_id=medic.id)
    assert (change["actor_id"], change["session_id"]) == (medic.id, medic_session)
    assert change["detail"]["other_sessions_revoked"] >= 1  # the tablet's session was still live
    assert only(found, AuditKind.PASSWORD_RESET, subject_id=medic.id)["actor_id"] == admin.id
    role = only(found, AuditKind.ROLE_CHANGED, subject_id=medic.id)
    assert (role["actor_id"], role["detail"]) == (admin.id, {"old": "medic", "new": "admin"})
    assert only(found, AuditKind.USER_DEACTIVATED, subject_id=medic.id)["actor_id"] == admin.id
    assert only(found, AuditKind.USER_REACTIVATED, subject_id=medic.id)["actor_id"] == admin.id
    everything = only(found, AuditKind.SESSIONS_REVOKED, subject_id=medic.id)
    assert everything["actor_id"] == admin.id and everything["detail"]["count"] >= 1
    assert again["session_id"]  # the session that revocation ended
    made = only(found, AuditKind.USER_CREATED, subject_id=created.json()["id"])
    assert (made["actor_id"], made["detail"]["role"]) == (admin.id, "medic")
    operator_made = only(found, AuditKind.USER_CREATED, subject_id=medic.id)  # Orgs.make: the operator
    assert operator_made["actor_id"] is None


async def test_pages_go_back_with_before_until_has_more_is_false(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=4)  # 5 user_created and 5 sign_in (operator tokens)
    admin = world.admins[0]
    whole = await events(stack, admin, limit=200)
    assert len(whole) == 10
    seen: list[int] = []
    before: int | None = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 3} if before is None else {"limit": 3, "before": before}
        response = await stack.client.get("/v1/audit", headers=admin.headers, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [e["id"] for e in page["events"]]
        if not page["has_more"]:
            assert page["next_before"] is None
            break
        assert page["next_before"] == page["events"][-1]["id"]
        before = page["next_before"]
    assert seen == [e["id"] for e in whole]


async def test_filters_by_user_and_by_kind(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=2)
    admin, medic, other = world.admins[0], *world.medics
    response = await stack.client.post(f"/v1/users/{medic.id}/deactivate", headers=admin.headers)
    assert response.status_code == 200
    about_medic = await events(stack, admin, user_id=medic.id)
    assert {e["subject_id"] for e in about_medic} == {medic.id}
    assert {e["kind"] for e in about_medic} == {"user_created", "sign_in", "user_deactivated"}
    deactivations = await events(stack, admin, kind="user_deactivated")
    assert [e["subject_id"] for e in deactivations] == [medic.id]
    assert await events(stack, admin, user_id=other.id, kind="user_deactivated") == []


async def test_medics_are_refused_and_bad_parameters_are_422(stack: Stack, orgs: Orgs) -> None:
    world = await orgs.make(admins=1, medics=1)
    refused = await stack.client.get("/v1/audit", headers=world.medics[0].headers)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert (await stack.client.get("/v1/audit")).status_code == 401
    huge = ({"before": str(2**63)}, {"before": "9" * 50})  # past a 64-bit id: these were 500s
    bad = ({"kind": "coffee_break"}, {"user_id": "nope"}, {"before": "0"}, {"limit": "0"}, {"limit": "201"}, *huge)
    for params in bad:
        response = await stack.client.get("/v1/audit", headers=world.admins[0].headers, params=params)
        assert response.status_code == 422, params
        assert response.json()["error"]["code"] == "validation_failed"


async def test_an_admin_never_sees_another_orgs_events(stack: Stack, orgs: Orgs) -> None:
    mine = await orgs.make(admins=1, medics=1)
    theirs = await orgs.make(admins=1, medics=1)
    stranger = theirs.medics[0]
    refused = await stack.client.post("/v1/auth/login", json={"email": stranger.email, "password": "wrong password"})
    assert refused.status_code == 401
    seen = await events(stack, mine.admins[0], limit=200)
    ours = {m.id for m in mine.members}
    assert seen and all(e["subject_id"] in ours for e in seen)
    assert await events(stack, mine.admins[0], user_id=stranger.id) == []
    assert len(await events(stack, theirs.admins[0], user_id=stranger.id)) == 3  # created, token, failed sign-in
