"""The account-lifecycle and session endpoints in the isolation property (test_isolation.py):
nobody manages, or ends the sessions of, a user they may not manage.

`intrude_on_lifecycle` acts as every member of an example's worlds. An admin tries every
user-management and session endpoint (list and revoke sessions, revoke one session by id,
rename, deactivate, reactivate, change the role, reset the password) on users of the other
orgs: one admin and one medic of each, rotating between actors as test_isolation's sweep does.
A medic tries the same on everyone else, their own org's admins and medics included. Every
refusal is a 404 whose body is exactly what an id that never existed gets, so it tells
nothing, not even "this is the org's last admin" (a 409), and the admin's audit log has no
event about them. A medic managing themself is refused with 403, and may list their own
sessions. Afterwards every member is unchanged (role, active, name), still signed in with the
session they had, and still signs in with their password; no admin's audit log names a user of
another org.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from sitecomms.protocol import limits
from sitecomms.protocol.enums import Role
from tests.support import PASSWORD, Member

INTRUDER_PASSWORD = "intruder passphrase 1"

Attempt = tuple[str, str, dict[str, str] | None]  # method, path, JSON body


def _attempts_on(user_id: str, role: Role) -> list[Attempt]:
    """Every request managing `user_id` (a `role`), each written so that it would change something."""
    other = Role.MEDIC if role is Role.ADMIN else Role.ADMIN
    return [
        ("GET", f"/v1/users/{user_id}/sessions", None),
        ("DELETE", f"/v1/users/{user_id}/sessions", None),
        ("PATCH", f"/v1/users/{user_id}", {"display_name": "Intruder"}),
        ("POST", f"/v1/users/{user_id}/deactivate", None),
        ("POST", f"/v1/users/{user_id}/reactivate", None),
        ("PUT", f"/v1/users/{user_id}/role", {"role": other.value}),
        ("POST", f"/v1/users/{user_id}/password", {"password": INTRUDER_PASSWORD}),
    ]


async def _send(client: httpx.AsyncClient, actor: Member, attempt: Attempt) -> httpx.Response:
    method, path, body = attempt
    return await client.request(method, path, json=body, headers=actor.headers)


async def _current_session(client: httpx.AsyncClient, member: Member) -> str:
    response = await client.get("/v1/sessions", headers=member.headers)
    assert response.status_code == 200, response.text
    return str(next(s["id"] for s in response.json()["sessions"] if s["current"]))


def _out_of_reach(actor: Member, members: Sequence[Member], turn: int) -> list[Member]:
    """For an admin, one admin and one medic of each other org; for a medic, also their org's others."""
    chosen = [m for m in members if m.org_id == actor.org_id and m.id != actor.id and actor.role is Role.MEDIC]
    for org_id in sorted({m.org_id for m in members} - {actor.org_id}):
        for role in Role:
            candidates = [m for m in members if m.org_id == org_id and m.role is role]
            if candidates:
                chosen.append(candidates[turn % len(candidates)])
    return chosen


class _Refusals:
    """One actor's attempts; what each endpoint answers for an id that never existed is asked once."""

    def __init__(self, client: httpx.AsyncClient, actor: Member) -> None:
        self._client = client
        self._actor = actor
        self._nowhere = str(uuid.uuid4())
        self._missing: dict[tuple[str, str], str] = {}

    async def _on_nothing(self, attempt: Attempt, victim_id: str) -> str:
        method, path, body = attempt
        key = (method, path.replace(victim_id, "{id}"))
        if key not in self._missing:
            elsewhere = (method, path.replace(victim_id, self._nowhere), body)
            self._missing[key] = (await _send(self._client, self._actor, elsewhere)).text
        return self._missing[key]

    async def check(self, victim: Member, session_id: str) -> None:
        """Everything on `victim` (and on their session) is refused exactly as on nothing."""
        attempts = [(a, victim.id) for a in _attempts_on(victim.id, victim.role)]
        attempts.append((("DELETE", f"/v1/sessions/{session_id}", None), session_id))
        for attempt, target_id in attempts:
            refused = await _send(self._client, self._actor, attempt)
            where = (self._actor.role.value, self._actor.id, victim.role.value, victim.id, attempt)
            assert refused.status_code == 404, (where, refused.status_code, refused.text)
            assert refused.json()["error"]["code"] == "not_found", (where, refused.text)
            missing = await self._on_nothing(attempt, target_id)
            assert refused.text == missing, (where, "a user out of reach must look exactly like a missing one")
        if self._actor.role is Role.ADMIN:  # the victim is in another org: the audit log knows nothing of them
            audit = await self._client.get("/v1/audit", params={"user_id": victim.id}, headers=self._actor.headers)
            assert audit.status_code == 200, audit.text
            assert (audit.json()["events"], audit.json()["has_more"]) == ([], False), audit.text


async def _medic_on_themself(client: httpx.AsyncClient, medic: Member, session_id: str) -> None:
    for attempt in _attempts_on(medic.id, medic.role)[3:]:  # deactivate, reactivate, role, password
        refused = await _send(client, medic, attempt)
        assert refused.status_code == 403, (attempt, refused.text)
        assert refused.json()["error"]["code"] == "forbidden", (attempt, refused.text)
    mine = await client.get(f"/v1/users/{medic.id}/sessions", headers=medic.headers)
    assert mine.status_code == 200, mine.text
    assert {s["user_id"] for s in mine.json()["sessions"]} == {medic.id}
    assert session_id in {s["id"] for s in mine.json()["sessions"]}


async def _unchanged(client: httpx.AsyncClient, member: Member, name: str, session_id: str) -> None:
    me = await client.get("/v1/me", headers=member.headers)
    assert me.status_code == 200, (member.id, "was signed out", me.text)
    user: dict[str, Any] = me.json()["user"]
    assert (user["role"], user["active"], user["display_name"]) == (member.role.value, True, name), user
    sessions = await client.get("/v1/sessions", headers=member.headers)
    assert session_id in {s["id"] for s in sessions.json()["sessions"]}, (member.id, "lost their session")
    login = await client.post("/v1/auth/login", json={"email": member.email, "password": PASSWORD})
    assert login.status_code == 200, (member.id, "cannot sign in with their password", login.text)


async def intrude_on_lifecycle(client: httpx.AsyncClient, members: Sequence[Member], names: Mapping[str, str]) -> None:
    """The sweep of the module doc, then the check that nobody was touched; `names` are the current ones."""
    sessions = {member.id: await _current_session(client, member) for member in members}
    for turn, actor in enumerate(members):
        refusals = _Refusals(client, actor)
        for victim in _out_of_reach(actor, members, turn):
            await refusals.check(victim, sessions[victim.id])
        if actor.role is Role.MEDIC:
            await _medic_on_themself(client, actor, sessions[actor.id])
    for member in members:
        await _unchanged(client, member, names[member.id], sessions[member.id])
    for admin in (m for m in members if m.role is Role.ADMIN):
        audit = await client.get("/v1/audit", params={"limit": limits.AUDIT_PAGE_MAX}, headers=admin.headers)
        assert audit.status_code == 200, audit.text
        leaked = sorted(m.id for m in members if m.org_id != admin.org_id and m.id in audit.text)
        assert not leaked, f"admin {admin.id}'s audit log names users of other orgs: {leaked}"
