"""Sessions: a refresh token per device, rotated on every use, reuse revoking the session;
sign-out, "my devices", revoke one and revoke all; idle expiry; claims checked against the
database (a correctly signed token with altered claims is refused)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import text

from sitecomms.protocol.enums import Role
from sitecomms.server.app import build_signin
from sitecomms.server.services.publisher import NoPublisher
from sitecomms.server.services.sessions import Peer
from sitecomms.store.types import utcnow
from tests.conftest import Stack
from tests.sql import execute
from tests.support import JWT_SECRET, PASSWORD, Member, Orgs, fast_settings


async def _login(stack: Stack, member: Member, device: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"email": member.email, "password": PASSWORD}
    if device is not None:
        body["device"] = device
    response = await stack.client.post("/v1/auth/login", json=body, headers={"User-Agent": "pytest-agent/1.0"})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _refresh(stack: Stack, token: str) -> httpx.Response:
    return await stack.client.post("/v1/auth/refresh", json={"refresh_token": token})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _me(stack: Stack, access_token: str) -> int:
    return (await stack.client.get("/v1/me", headers=_bearer(access_token))).status_code


async def test_login_opens_a_session_whose_token_names_it(stack: Stack, orgs: Orgs) -> None:
    medic = (await orgs.make(medics=1)).medics[0]
    signed = await _login(stack, medic, device="Maya's phone")
    claims = jwt.decode(signed["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["sid"] == signed["session_id"]
    assert jwt.get_unverified_header(signed["access_token"])["kid"]
    assert claims["exp"] - claims["iat"] == stack.settings.token_ttl_seconds == 15 * 60
    assert signed["refresh_token"].startswith(signed["session_id"] + ".")
    assert signed["refresh_idle_expires_in"] == 30 * 24 * 3600
    devices = (await stack.client.get("/v1/sessions", headers=_bearer(signed["access_token"]))).json()["sessions"]
    mine = next(d for d in devices if d["id"] == signed["session_id"])
    assert mine["device"] == "Maya's phone" and mine["current"] is True
    assert mine["last_address"] == stack.address


async def test_the_device_defaults_to_the_user_agent(stack: Stack, orgs: Orgs) -> None:
    medic = (await orgs.make(medics=1)).medics[0]
    signed = await _login(stack, medic)
    devices = (await stack.client.get("/v1/sessions", headers=_bearer(signed["access_token"]))).json()["sessions"]
    assert next(d for d in devices if d["current"])["device"] == "pytest-agent/1.0"


async def test_refresh_rotates_and_the_old_token_is_theft(stack: Stack, orgs: Orgs) -> None:
    medic = (await orgs.make(medics=1)).medics[0]
    first = await _login(stack, medic)
    second = (await _refresh(stack, first["refresh_token"])).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["session_id"] == first["session_id"]
    third = (await _refresh(stack, second["refresh_token"])).json()
    assert await _me(stack, third["access_token"]) == 200
    # The first token again, two rotations later: it was copied. The whole session ends.
    reused = await _refresh(stack, first["refresh_token"])
    assert reused.status_code == 401
    assert "already used" in reused.json()["error"]["message"]
    assert await _me(stack, third["access_token"]) == 401
    assert (await _refresh(stack, third["refresh_token"])).status_code == 401
    events = await stack.db.read(
        "test_audit",
        lambda conn: execute(
            conn,
            text("SELECT kind, session_id FROM audit_events WHERE subject_id = :u AND kind = 'refresh_reused'"),
            {"u": medic.id},
        ).all(),
    )
    assert [tuple(e) for e in events] == [("refresh_reused", first["session_id"])]


async def test_a_retry_of_a_lost_refresh_answer_is_answered_again(stack: Stack, orgs: Orgs) -> None:
    medic = (await orgs.make(medics=1)).medics[0]
    first = await _login(stack, medic)
    lost = (await _refresh(stack, first["refresh_token"])).json()
    again = await _refresh(stack, first["refresh_token"])  # the answer above never reached the phone
    assert again.status_code == 200
    assert again.json()["refresh_token"] == lost["refresh_token"]
    # Once the next token has been used, the old one is reuse.
    assert (await _refresh(stack, lost["refresh_token"])).status_code == 200
    assert (await _refresh(stack, first["refresh_token"])).status_code == 401


async def test_concurrent_uses_of_one_refresh_token_all_get_the_same_successor(stack: Stack, orgs: Orgs) -> None:
    # On PostgreSQL the uses that lost the rotation race were answered 401 (signed out for good).
    medic = (await orgs.make(medics=1)).medics[0]
    for _ in range(3):
        signed = await _login(stack, medic)
        async with asyncio.timeout(30):
            answers = await asyncio.gather(*[_refresh(stack, signed["refresh_token"]) for _ in range(6)])
        assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
        successors = {a.json()["refresh_token"] for a in answers}
        assert len(successors) == 1
        assert (await _refresh(stack, successors.pop())).status_code == 200


async def test_a_stolen_token_used_first_by_the_thief_is_caught_when_the_owner_uses_it(
    stack: Stack, orgs: Orgs
) -> None:
    medic = (await orgs.make(medics=1)).medics[0]
    owner = await _login(stack, medic)
    thief = (await _refresh(stack, owner["refresh_token"])).json()
    thief_next = (await _refresh(stack, thief["refresh_token"])).json()
    assert (await _refresh(stack, owner["refresh_token"])).status_code == 401  # both copies used: revoked
    assert await _me(stack, thief_next["access_token"]) == 401


async def test_garbage_refresh_tokens_are_refused_without_signing_anyone_out(stack: Stack, orgs: Orgs) -> None:
    medic = (await orgs.make(medics=1)).medics[0]
    signed = await _login(stack, medic)
    session_id = signed["session_id"]
    for garbage in ["", "x", f"{session_id}.AAAA", f"{session_id}.{'A' * 43}", f"{uuid.uuid4()}.{'A' * 43}", "a.b.c"]:
        response = await _refresh(stack, garbage)
        assert response.status_code in (401, 422), garbage
    assert await _me(stack, signed["access_token"]) == 200
    assert (await _refresh(stack, signed["refresh_token"])).status_code == 200


async def test_sign_out_ends_this_session_only(stack: Stack, orgs: Orgs) -> None:
    medic = (await orgs.make(medics=1)).medics[0]
    phone, laptop = await _login(stack, medic, "phone"), await _login(stack, medic, "laptop")
    assert (await stack.client.post("/v1/auth/logout", headers=_bearer(phone["access_token"]))).status_code == 204
    assert await _me(stack, phone["access_token"]) == 401
    assert (await _refresh(stack, phone["refresh_token"])).status_code == 401
    assert await _me(stack, laptop["access_token"]) == 200
    listed = (await stack.client.get("/v1/sessions", headers=_bearer(laptop["access_token"]))).json()["sessions"]
    assert phone["session_id"] not in {s["id"] for s in listed}


async def test_revoke_one_and_revoke_all(stack: Stack, orgs: Orgs) -> None:
    medic = (await orgs.make(medics=1)).medics[0]
    a, b, c = [await _login(stack, medic, name) for name in ("a", "b", "c")]
    gone = await stack.client.delete(f"/v1/sessions/{b['session_id']}", headers=_bearer(a["access_token"]))
    assert gone.status_code == 204
    assert await _me(stack, b["access_token"]) == 401
    again = await stack.client.delete(f"/v1/sessions/{b['session_id']}", headers=_bearer(a["access_token"]))
    assert again.status_code == 404
    kept = await stack.client.delete("/v1/sessions?keep_current=true", headers=_bearer(a["access_token"]))
    assert kept.status_code == 200 and kept.json()["revoked"] >= 1
    assert await _me(stack, c["access_token"]) == 401
    assert await _me(stack, a["access_token"]) == 200
    everything = await stack.client.delete("/v1/sessions", headers=_bearer(a["access_token"]))
    assert everything.status_code == 200
    assert await _me(stack, a["access_token"]) == 401
    assert (await _refresh(stack, a["refresh_token"])).status_code == 401


async def test_nobody_sees_or_revokes_another_users_sessions(stack: Stack, orgs: Orgs) -> None:
    world, other = await orgs.make(medics=2), await orgs.make(medics=1)
    medic, neighbour = world.medics
    mine = await _login(stack, medic)
    for caller in (neighbour, other.admins[0], other.medics[0]):
        revoked = await stack.client.delete(f"/v1/sessions/{mine['session_id']}", headers=caller.headers)
        assert revoked.status_code == 404, caller
        listed = await stack.client.get(f"/v1/users/{medic.id}/sessions", headers=caller.headers)
        assert listed.status_code == 404, caller
        everything = await stack.client.delete(f"/v1/users/{medic.id}/sessions", headers=caller.headers)
        assert everything.status_code == 404, caller
    assert await _me(stack, mine["access_token"]) == 200
    # The medic's own admin may: a lost phone is reported to them.
    admin = world.admins[0]
    listed = await stack.client.get(f"/v1/users/{medic.id}/sessions", headers=admin.headers)
    assert mine["session_id"] in {s["id"] for s in listed.json()["sessions"]}
    assert (await stack.client.delete(f"/v1/users/{medic.id}/sessions", headers=admin.headers)).status_code == 200
    assert await _me(stack, mine["access_token"]) == 401


async def test_an_idle_session_expires(stack: Stack, orgs: Orgs) -> None:
    medic = (await orgs.make(medics=1)).medics[0]
    signed = await _login(stack, medic)
    idle = timedelta(seconds=stack.settings.refresh_idle_seconds + 60)

    def age(conn: Any) -> None:
        execute(
            conn,
            text("UPDATE sessions SET last_used_at = :t, rotated_at = :t WHERE id = :id"),
            {"t": (utcnow() - idle).replace(tzinfo=None), "id": signed["session_id"]},
        )

    await stack.db.write("test_age", age)
    expired = await _refresh(stack, signed["refresh_token"])
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


@pytest.mark.parametrize("claim", ["role", "org_id", "sub", "sid"])
async def test_a_correctly_signed_token_with_altered_claims_is_refused(stack: Stack, orgs: Orgs, claim: str) -> None:
    world, other = await orgs.make(medics=1), await orgs.make(medics=1)
    medic = world.medics[0]
    signed = await _login(stack, medic)
    header = jwt.get_unverified_header(signed["access_token"])
    claims = jwt.decode(signed["access_token"], JWT_SECRET, algorithms=["HS256"])
    altered = {
        "role": Role.ADMIN.value,
        "org_id": other.org_id,
        "sub": world.admins[0].id,
        "sid": str(uuid.uuid4()),
    }[claim]
    forged = jwt.encode({**claims, claim: altered}, JWT_SECRET, algorithm="HS256", headers={"kid": header["kid"]})
    for path in ("/v1/me", "/v1/users", "/v1/conversations", "/v1/sync"):
        response = await stack.client.get(path, headers=_bearer(forged))
        assert response.status_code == 401, (claim, path, response.text)
    assert await _me(stack, signed["access_token"]) == 200  # the genuine token still works


async def test_a_token_without_a_key_id_or_session_is_refused(stack: Stack, orgs: Orgs) -> None:
    medic = (await orgs.make(medics=1)).medics[0]
    base = {"sub": medic.id, "org_id": medic.org_id, "role": "medic", "exp": int(time.time()) + 600}
    old_style = jwt.encode(base, JWT_SECRET, algorithm="HS256")  # as tokens were before sessions
    assert await _me(stack, old_style) == 401


async def test_guessed_refresh_tokens_count_against_the_address(stack: Stack, orgs: Orgs) -> None:
    medic = (await orgs.make(medics=1)).medics[0]
    signed = await _login(stack, medic)
    allowed = 4 * stack.settings.login_failures_allowed  # per address; the next failure starts a block
    guesses = [await _refresh(stack, f"{signed['session_id']}.{'B' * 43}") for _ in range(allowed + 2)]
    assert [g.status_code for g in guesses[:-1]] == [401] * (allowed + 1)
    assert guesses[-1].status_code == 429 and int(guesses[-1].headers["Retry-After"]) >= 1
    assert guesses[0].json()["error"]["message"] == "invalid refresh token", "a guess learns nothing more"


async def test_a_session_cannot_be_rotated_faster_than_its_budget(stack: Stack, orgs: Orgs) -> None:
    """A thief rotating a stolen session thousands of times would outrun the chain walk."""
    medic = (await orgs.make(medics=1)).medics[0]
    signed = await _login(stack, medic)

    def exhaust(conn: Any) -> None:
        execute(conn, text("UPDATE sessions SET generation = 100000 WHERE id = :id"), {"id": signed["session_id"]})

    await stack.db.write("test_exhaust", exhaust)
    # The stored hash is the login's secret's: generation is a counter only, so the token is current.
    too_fast = await _refresh(stack, signed["refresh_token"])
    assert too_fast.status_code == 429, too_fast.text
    assert await _me(stack, signed["access_token"]) == 200, "refused, not revoked"


async def test_sign_in_upgrades_the_hash_when_the_argon2_settings_change(stack: Stack, orgs: Orgs) -> None:
    medic = (await orgs.make(medics=1)).medics[0]
    stronger = build_signin(fast_settings(stack.settings.database_url, argon2_time_cost=2), stack.db, NoPublisher())

    def stored(conn: Any) -> str:
        return str(execute(conn, text("SELECT password_hash FROM users WHERE id = :id"), {"id": medic.id}).scalar())

    assert ",t=1," in await stack.db.read("test_hash", stored)
    await stronger.login(medic.email, PASSWORD, device=None, peer=Peer(stack.address))
    assert ",t=2," in await stack.db.read("test_hash", stored)
    assert (await _login(stack, medic)).get("access_token"), "the upgraded hash still verifies"
