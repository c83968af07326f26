"""Accounts on the dashboard in a real browser: the Users view, my account, and the silent refresh.

This module runs its own server with the shortest access tokens allowed (60 s), so pages
really refresh; it pings every 20 s, so a page whose clock is moved ahead (Playwright's
fake clock, to reach the refresh without waiting 48 s) does not take the socket for dead;
and a user may hold 2 sockets, so a third page closes the oldest (4429).
Screenshots of the Users view and My account go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Locator, Request, WebSocket, expect

from tests.servers import base_env, run_cli, start
from tests.web.pages import TIMEOUT, TIMEOUT_MS, Api, Dashboard, Dashboards, Medic, Site

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
TOKEN_TTL_SECONDS = 60
SIGNED_OUT = "You were signed out. Sign in again."
NEW_PASSWORD = "a-new-password-2024"


@pytest.fixture(scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    directory = tmp_path_factory.mktemp("web-accounts")
    env = base_env(
        f"sqlite:///{directory / 'sitecomms.db'}",
        SITECOMMS_TOKEN_TTL_SECONDS=str(TOKEN_TTL_SECONDS),
        SITECOMMS_WS_HEARTBEAT_SECONDS="20",
        SITECOMMS_WS_SOCKETS_PER_USER="2",
    )
    demo = await asyncio.to_thread(run_cli, ["demo"], env)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    served = await asyncio.wait_for(asyncio.to_thread(start, env, directory / "server-1.log"), 120)
    site = Site(env, directory, served)
    try:
        yield site
    finally:
        await site.stop()


def tag() -> str:
    return uuid.uuid4().hex[:8]


def user_row(page: Dashboard, user_id: str) -> Locator:
    return page.page.locator(f'#users-list li[data-id="{user_id}"]')


def user_action(page: Dashboard, user_id: str, action: str) -> Locator:
    return user_row(page, user_id).locator(f'button[data-action="{action}"]')


async def open_users(admin: Dashboard) -> None:
    await admin.choose("#users-open")
    await expect(admin.page.locator("#users")).to_be_visible()
    await expect(admin.page.locator("#users-list li").first).to_be_visible()


async def open_account(page: Dashboard) -> None:
    await page.choose("#account-open")
    await expect(page.page.locator("#account")).to_be_visible()
    await expect(page.page.locator("#my-devices-list li").first).to_be_visible()


async def expect_signed_out(page: Dashboard) -> None:
    await expect(page.page.locator("#login-email")).to_be_visible()
    await expect(page.page.locator("#app")).to_be_hidden()
    await expect(page.page.locator("#login-error")).to_have_text(SIGNED_OUT)
    assert await page.stored_session() is None


async def stored_token(page: Dashboard) -> dict[str, Any]:
    value = await page.stored_session()
    assert value is not None
    return value


def refreshes_of(page: Dashboard) -> list[Request]:
    seen: list[Request] = []
    page.page.on("request", lambda r: seen.append(r) if r.url.endswith("/v1/auth/refresh") else None)
    return seen


async def new_medic(api: Api, name: str) -> Medic:
    return await api.create_medic(await api.login("admin@demo.example"), name)


# ---- the Users view ---------------------------------------------------------------------------


async def test_admin_deactivates_a_medic_whose_open_page_is_signed_out(dashboards: Dashboards, api: Api) -> None:
    t = tag()
    medic = await new_medic(api, f"Deactivated Medic {t}")
    medic_page = await dashboards.signed_in(medic.email, medic.password)
    admin = await dashboards.signed_in("admin@demo.example")
    await open_users(admin)
    row = user_row(admin, medic.account.id)
    await expect(row.locator(".name")).to_have_text(f"Deactivated Medic {t}")
    await expect(row.locator(".tag.deactivated")).to_have_count(0)

    await user_action(admin, medic.account.id, "deactivate").click()
    await expect_signed_out(medic_page)  # the server closed its socket (4401); the refresh answered 401
    await expect(row.locator(".tag.deactivated")).to_have_text("Deactivated")
    await expect(admin.page.locator("#users-list li").last).to_have_attribute("data-id", medic.account.id)
    await expect(admin.page.locator("#users-status")).to_have_text(f"Deactivated Medic {t}: deactivated.")
    await medic_page.page.fill("#login-email", medic.email)
    await medic_page.page.fill("#login-password", medic.password)
    await medic_page.page.click("#login-form button[type=submit]")
    await expect(medic_page.page.locator("#login-error")).not_to_have_text("")
    await expect(medic_page.page.locator("#app")).to_be_hidden()

    await user_action(admin, medic.account.id, "reactivate").click()
    await expect(row.locator(".tag.deactivated")).to_have_count(0)
    await expect(admin.page.locator("#users-list li").last).not_to_have_attribute("data-id", medic.account.id)
    await medic_page.sign_in(medic.email, medic.password)


async def test_the_users_view_follows_changes_live_and_shows_refusals(dashboards: Dashboards, api: Api) -> None:
    t = tag()
    admin_account = await api.login("admin@demo.example")
    admin2 = await api.login("admin2@demo.example")
    admin = await dashboards.signed_in("admin@demo.example")
    await open_users(admin)
    count = await admin.page.locator("#users-list li").count()

    # A user added elsewhere appears; a role changed elsewhere moves the row (admins first).
    medic = await api.create_medic(admin_account, f"Live Row {t}")
    await expect(admin.page.locator("#users-list li")).to_have_count(count + 1)
    response = await api.http.put(f"/v1/users/{medic.account.id}/role", json={"role": "admin"}, headers=admin2.headers)
    assert response.status_code == 200, response.text
    await expect(user_row(admin, medic.account.id).locator(".tag.role")).to_have_text("Admin")
    names = await admin.page.locator("#users-list li .tag.role").all_inner_texts()
    assert names == sorted(names), f"admins come first: {names}"
    await user_action(admin, medic.account.id, "demote").click()
    await expect(user_row(admin, medic.account.id).locator(".tag.role")).to_have_text("Medic")

    # The last active admin cannot step down: the server's refusal (409) is shown.
    response = await api.http.post(f"/v1/users/{admin2.user['id']}/deactivate", headers=admin_account.headers)
    assert response.status_code == 200, response.text
    try:
        await user_action(admin, admin_account.id, "demote").click()
        await expect(admin.page.locator("#users-error")).to_have_text(
            f"Could not demote {admin_account.user['display_name']}: the last active admin of an organisation"
            " cannot be demoted; make another admin first"
        )
        await expect(user_row(admin, admin_account.id).locator(".tag.role")).to_have_text("Admin")
    finally:
        response = await api.http.post(f"/v1/users/{admin2.user['id']}/reactivate", headers=admin_account.headers)
        assert response.status_code == 200, response.text


async def test_admin_resets_a_password_and_sees_a_users_devices(dashboards: Dashboards, api: Api) -> None:
    t = tag()
    medic = await new_medic(api, f"Reset Medic {t}")
    medic_page = await dashboards.signed_in(medic.email, medic.password)
    admin = await dashboards.signed_in("admin@demo.example")
    await open_users(admin)

    await user_action(admin, medic.account.id, "devices").click()
    await expect(admin.page.locator("#devices-title")).to_have_text(f"Devices of Reset Medic {t}")
    await expect(admin.page.locator("#devices-list li")).to_have_count(2)  # the page's and the API's sign-in
    await expect(admin.page.locator("#devices-list li .name").first).to_have_text("Web · Chrome on Linux")
    await admin.page.click("#devices-close")

    await user_action(admin, medic.account.id, "reset-password").click()
    await expect(admin.page.locator("#reset-password-title")).to_have_text(f"New password for Reset Medic {t}")
    field = admin.page.locator("#reset-password-new")
    await field.evaluate("(input) => input.removeAttribute('minlength')")  # the server's rule, not the page's
    await field.fill("short")
    await admin.page.click("#reset-password-submit")
    await expect(admin.page.locator("#reset-password-error")).to_contain_text("password")
    await expect(admin.page.locator("#reset-password")).to_be_visible()
    await field.fill(NEW_PASSWORD)
    await admin.page.click("#reset-password-submit")
    await expect(admin.page.locator("#reset-password")).to_be_hidden()
    await expect(admin.page.locator("#users-status")).to_have_text(
        f"The password of Reset Medic {t} was reset; their devices were signed out."
    )
    await expect_signed_out(medic_page)
    await medic_page.sign_in(medic.email, NEW_PASSWORD)


# ---- my account -------------------------------------------------------------------------------


async def test_change_my_password(dashboards: Dashboards, api: Api) -> None:
    medic = await new_medic(api, f"Password Medic {tag()}")
    page = await dashboards.signed_in(medic.email, medic.password)
    await open_account(page)
    error = page.page.locator("#password-error")

    await page.page.fill("#password-current", "not-my-password")
    await page.page.fill("#password-new", NEW_PASSWORD)
    await page.page.fill("#password-repeat", NEW_PASSWORD)
    await page.page.click("#password-submit")
    await expect(error).to_have_text("The current password is wrong.")

    await page.page.fill("#password-current", medic.password)
    for field in ("#password-new", "#password-repeat"):
        await page.page.locator(field).evaluate("(input) => input.removeAttribute('minlength')")
        await page.page.fill(field, "short")
    await page.page.click("#password-submit")
    await expect(error).to_contain_text("new_password")  # the server's 422, in its words

    await page.page.fill("#password-new", NEW_PASSWORD)
    await page.page.fill("#password-repeat", NEW_PASSWORD)
    await page.page.click("#password-submit")
    await expect(page.page.locator("#password-status")).to_have_text(
        "Password changed; your other devices were signed out."
    )
    await expect(error).to_have_text("")
    await expect(page.page.locator("#my-devices-list li")).to_have_count(1)  # the API's sign-in was revoked
    await page.page.click("#account-close")
    await expect(page.connection).to_have_attribute("data-state", "live")
    await api.login(medic.email, NEW_PASSWORD)
    response = await api.http.post("/v1/auth/login", json={"email": medic.email, "password": medic.password})
    assert response.status_code == 401


async def test_my_devices_lists_my_sessions_and_signs_them_out(dashboards: Dashboards, api: Api) -> None:
    medic = await new_medic(api, f"Devices Medic {tag()}")
    await api.http.delete("/v1/sessions", headers=medic.account.headers)  # only the browsers remain
    here = await dashboards.signed_in(medic.email, medic.password)
    there = await dashboards.signed_in(medic.email, medic.password)
    await open_account(here)
    devices = here.page.locator("#my-devices-list li")
    await expect(devices).to_have_count(2)
    await expect(here.page.locator("#my-devices-list li.current")).to_have_count(1)
    mine = (await stored_token(here))["session_id"]
    await expect(here.page.locator("#my-devices-list li.current")).to_have_attribute("data-id", mine)
    await expect(here.page.locator("#my-devices-list li.current .tag")).to_have_text("This device")
    await expect(here.page.locator("#my-devices-list li.current button")).to_have_count(0)

    await here.page.locator('#my-devices-list li:not(.current) button[data-action="sign-out"]').click()
    await expect(devices).to_have_count(1)
    await expect_signed_out(there)

    await there.sign_in(medic.email, medic.password)
    await here.page.click("#my-devices-sign-out-others")
    await expect(here.page.locator("#my-devices-status")).to_have_text("1 device signed out.")
    await expect(devices).to_have_count(1)
    await expect_signed_out(there)
    await here.page.click("#account-close")
    await expect(here.connection).to_have_attribute("data-state", "live")

    # Sign out ends this session on the server too.
    token = (await stored_token(here))["access_token"]
    async with here.page.expect_response(lambda r: r.url.endswith("/v1/auth/logout")) as logout:
        await here.choose("#sign-out")
    assert (await logout.value).status == 204
    await expect(here.page.locator("#login-email")).to_be_visible()
    response = await api.http.get("/v1/me", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 401


# ---- the silent refresh --------------------------------------------------------------------------


async def test_the_page_refreshes_its_token_and_tells_the_socket(dashboards: Dashboards, api: Api) -> None:
    medic = await new_medic(api, f"Refresh Medic {tag()}")
    page = await dashboards.new()
    await page.page.clock.install()  # real time flows; fast_forward jumps it (the refresh is due at 48 s)
    sockets: list[WebSocket] = []
    page.page.on("websocket", lambda socket: sockets.append(socket))
    refreshes = refreshes_of(page)
    await page.sign_in(medic.email, medic.password)
    before = await stored_token(page)
    assert refreshes == []

    async with sockets[0].expect_event(
        "framereceived", lambda frame: '"authenticated"' in str(frame), timeout=TIMEOUT_MS
    ) as authenticated:
        await page.page.clock.fast_forward(TOKEN_TTL_SECONDS * 800 + 1000)
    after = await stored_token(page)
    assert len(refreshes) == 1
    assert after["refresh_token"] != before["refresh_token"]
    # (the access token itself may be byte-identical: it names the same session, and its iat has
    # second precision, while the fake clock got here in well under a second of real time)
    extended_to = json.loads(str(await authenticated.value))["expires_at"]  # Unix time
    assert abs(extended_to - datetime.fromisoformat(after["expires_at"].replace("Z", "+00:00")).timestamp()) < 1
    assert after["session_id"] == before["session_id"]

    # The page goes on with the new token, on the same socket.
    text = f"Sent after the refresh ({tag()})"
    async with page.page.expect_request(lambda r: r.url.endswith("/v1/messages")) as sent:
        await page.open(medic.conversation_id, "Admin")
        await page.send(text)
    assert (await sent.value).headers["authorization"] == f"Bearer {after['access_token']}"
    await expect(page.message(text).locator(".status")).to_have_text("sent")
    assert len(sockets) == 1 and not sockets[0].is_closed()
    assert len(refreshes) == 1
    await expect(page.connection).to_have_attribute("data-state", "live")


async def test_a_promoted_medic_refreshes_once_and_goes_on_as_admin(dashboards: Dashboards, api: Api) -> None:
    medic = await new_medic(api, f"Promoted Medic {tag()}")
    page = await dashboards.new()
    sockets: list[WebSocket] = []
    reconnected = asyncio.Event()

    def opened(socket: WebSocket) -> None:
        sockets.append(socket)
        if len(sockets) == 2:
            reconnected.set()

    page.page.on("websocket", opened)
    refreshes = refreshes_of(page)
    await page.sign_in(medic.email, medic.password)
    await page.page.click("#menu-button")
    await expect(page.page.locator("#account-open")).to_be_visible()
    await expect(page.page.locator("#users-open")).to_be_hidden()

    # The role change ends the socket's access (4401) and the token's claims no longer match:
    # one refresh (never two with the same refresh token), a new socket, the admin's buttons.
    admin = await api.login("admin@demo.example")
    response = await api.http.put(f"/v1/users/{medic.account.id}/role", json={"role": "admin"}, headers=admin.headers)
    assert response.status_code == 200, response.text
    await expect(page.page.locator("#users-open")).to_be_visible()  # the menu is still open
    await asyncio.wait_for(reconnected.wait(), TIMEOUT)
    await expect(page.connection).to_have_attribute("data-state", "live")
    assert sockets[0].is_closed()
    assert len(refreshes) == 1
    responses = [await r.response() for r in refreshes]
    assert [r.status for r in responses if r is not None] == [200]
    await open_users(page)  # an admin's request, with the refreshed token


async def test_a_page_closed_for_too_many_sockets_waits_for_the_user(dashboards: Dashboards, api: Api) -> None:
    medic = await new_medic(api, f"Many Tabs {tag()}")
    first = await dashboards.new()
    first_sockets: list[WebSocket] = []
    first.page.on("websocket", lambda socket: first_sockets.append(socket))
    await first.sign_in(medic.email, medic.password)
    second = await dashboards.signed_in(medic.email, medic.password)
    third = await dashboards.signed_in(medic.email, medic.password)  # 2 sockets per user here: the first goes

    notice = first.page.locator("#notice")
    await expect(notice).to_be_visible()
    await expect(notice).to_contain_text("open in too many places")
    await expect(first.connection).to_have_attribute("data-state", "offline")
    await expect(third.connection).to_have_attribute("data-state", "live")
    await expect(second.connection).to_have_attribute("data-state", "live")
    assert len(first_sockets) == 1

    await first.page.click("#notice-reconnect")  # the user asks: this page is live, the oldest other goes
    await expect(first.connection).to_have_attribute("data-state", "live")
    await expect(notice).to_be_hidden()
    await expect(second.page.locator("#notice")).to_be_visible()
    assert len(first_sockets) == 2


# ---- screenshots and hostile names ------------------------------------------------------------------


async def test_screenshots_of_the_users_view_and_my_account(dashboards: Dashboards, api: Api) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    hostile = '<img src=x onerror="window.__owned=1">Ana'
    medic = await new_medic(api, hostile)
    admin = await dashboards.signed_in("admin@demo.example")
    await open_users(admin)
    await expect(user_row(admin, medic.account.id).locator(".name")).to_have_text(hostile)
    await expect(admin.page.locator("#users-list img")).to_have_count(0)
    assert await admin.page.evaluate("typeof window.__owned") == "undefined"
    await admin.page.screenshot(path=SCREENSHOTS / "users-view.png")
    await admin.page.click("#users-close")

    await open_account(admin)
    await admin.page.screenshot(path=SCREENSHOTS / "my-account.png")
    for name in ("users-view.png", "my-account.png"):
        assert (SCREENSHOTS / name).stat().st_size > 0
