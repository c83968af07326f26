"""Sockets lose access when their user or session does, on every server process, within 1 s:
deactivation, revocation and role changes close them with 4401; a user's sockets are capped
(the oldest closes with 4429); an `auth` frame must carry a token of the same session."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from sitecomms.protocol.frames import CloseCode
from tests.realtime_client import RealtimeClient
from tests.server.realtime.test_channel import running_site
from tests.server.realtime.test_multiprocess import WAIT, auth, bus_kind, cluster  # noqa: F401 (fixture)
from tests.servers import fresh_database
from tests.support import PASSWORD

LOST_WITHIN = 1.0  # seconds: the bound for every process to close a socket that lost access


async def _live(base_url: str, token: str, label: str) -> RealtimeClient:
    client = await RealtimeClient.connect(base_url, token, label=label, within=WAIT)
    await client.until_live(WAIT)
    return client


async def _closed_with(client: RealtimeClient, started: float) -> tuple[int | None, float]:
    code = await client.wait_closed(LOST_WITHIN + 2.0)  # the bound is asserted on the time measured
    return code, time.monotonic() - started


@pytest.mark.postgres
async def test_deactivation_closes_every_socket_on_every_process(bus_kind: str, tmp_path: Path) -> None:  # noqa: F811
    async with cluster(bus_kind, tmp_path) as c:
        sockets = [
            await _live(c.a.base_url, c.medic1.token, "medic1@A"),
            await _live(c.b.base_url, c.medic1.token, "medic1@B"),
        ]
        bystander = await _live(c.b.base_url, c.medic2.token, "medic2@B")
        try:
            started = time.monotonic()
            response = await c.http_a.post(f"/v1/users/{c.medic1.id}/deactivate", headers=auth(c.admin))
            assert response.status_code == 200, response.text
            results = await asyncio.gather(*(_closed_with(s, started) for s in sockets))
            for (code, took), where in zip(results, ("A (did it)", "B (another process)"), strict=True):
                assert code == CloseCode.UNAUTHENTICATED, (where, code, c.describe())
                assert took < LOST_WITHIN, f"{where}: closed after {took:.2f} s"
            for http in (c.http_a, c.http_b):
                assert (await http.get("/v1/conversations", headers=auth(c.medic1))).status_code == 401
            refused = await RealtimeClient.connect(c.b.base_url, c.medic1.token, label="again", within=WAIT)
            assert await refused.wait_closed(WAIT) == CloseCode.UNAUTHENTICATED
            assert bystander.close_code is None, "another medic's socket stays open"
            assert (await c.http_b.get("/v1/me", headers=auth(c.medic2))).status_code == 200
        finally:
            for client in (*sockets, bystander):
                await client.close()


async def _login(http: httpx.AsyncClient, email: str) -> dict[str, str]:
    response = await http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_revocation_and_role_change_close_sockets_on_one_process(backend: str, tmp_path: Path) -> None:
    async with fresh_database(backend, tmp_path) as url, running_site(url, tmp_path / "serve.log") as site:
        world = await site.world(admins=1, medics=1)
        admin, medic = world.admins[0], world.medics[0]
        phone, laptop = await _login(site.http.client, medic.email), await _login(site.http.client, medic.email)
        on_phone = await _live(site.base_url, phone["access_token"], "phone")
        on_laptop = await _live(site.base_url, laptop["access_token"], "laptop")
        try:
            started = time.monotonic()
            revoked = await site.http.client.delete(
                f"/v1/sessions/{phone['session_id']}", headers={"Authorization": f"Bearer {laptop['access_token']}"}
            )
            assert revoked.status_code == 204
            code, took = await _closed_with(on_phone, started)
            assert code == CloseCode.UNAUTHENTICATED and took < LOST_WITHIN, (code, took)
            assert on_laptop.close_code is None, "the other device stays signed in"

            started = time.monotonic()
            promoted = await site.http.client.put(
                f"/v1/users/{medic.id}/role", headers=admin.headers, json={"role": "admin"}
            )
            assert promoted.status_code == 200
            code, took = await _closed_with(on_laptop, started)
            assert code == CloseCode.UNAUTHENTICATED and took < LOST_WITHIN, (code, took)
            # The client refreshes and comes back as an admin.
            fresh = await site.http.client.post("/v1/auth/refresh", json={"refresh_token": laptop["refresh_token"]})
            assert fresh.status_code == 200
            again = await _live(site.base_url, fresh.json()["access_token"], "laptop again")
            assert again.welcome is not None and again.welcome["role"] == "admin"
            await again.close()
        finally:
            await on_phone.close()
            await on_laptop.close()


async def test_an_auth_frame_must_carry_a_token_of_the_same_session(tmp_path: Path) -> None:
    async with fresh_database("sqlite", tmp_path) as url, running_site(url, tmp_path / "serve.log") as site:
        medic = (await site.world(admins=1, medics=1)).medics[0]
        first, second = await _login(site.http.client, medic.email), await _login(site.http.client, medic.email)
        client = await _live(site.base_url, first["access_token"], "first")
        try:
            await client.send({"type": "auth", "token": second["access_token"]})
            refused = await client.frames_until(lambda f: f.get("type") == "error", WAIT)
            assert "another user or session" in refused[-1]["message"]
            renewed = await site.http.client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
            await client.send({"type": "auth", "token": renewed.json()["access_token"]})
            accepted = await client.frames_until(lambda f: f.get("type") == "authenticated", WAIT)
            assert accepted[-1]["expires_at"] >= client.welcome["expires_at"]  # type: ignore[index]
        finally:
            await client.close()


async def test_a_user_holds_at_most_the_cap_of_sockets(tmp_path: Path) -> None:
    async with (
        fresh_database("sqlite", tmp_path) as url,
        running_site(url, tmp_path / "serve.log", ws_sockets_per_user="3") as site,
    ):
        world = await site.world(admins=1, medics=1)
        medic = world.medics[0]
        sockets = [await _live(site.base_url, medic.token, f"socket {i}") for i in range(3)]
        other = await _live(site.base_url, world.admins[0].token, "admin")
        try:
            newest = await _live(site.base_url, medic.token, "socket 3")
            assert await sockets[0].wait_closed(WAIT) == CloseCode.TOO_MANY_SOCKETS
            assert all(s.close_code is None for s in sockets[1:]) and newest.close_code is None
            assert other.close_code is None
            sockets.append(newest)
        finally:
            for client in (*sockets, other):
                await client.close()
