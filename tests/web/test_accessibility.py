"""Accessibility of the dashboard's main views, checked with axe-core in Chromium.

Each view is reached as a user would (the login form, then clicks) and must show zero axe
violations: the login page, the conversation list, an open thread, My account and the admins'
Users dialog. The harness itself is tested too: an image without a text alternative, added to
the page, must be reported (so zero violations means axe looked, not that it did not run).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from playwright.async_api import expect

from tests.web.axe import describe, violations
from tests.web.pages import Dashboard, Dashboards
from tests.web.phones import PHONE

ADMIN = "admin@demo.example"


async def assert_no_violations(dashboard: Dashboard, view: str) -> None:
    found = await violations(dashboard.page)
    assert not found, f"{view}: {describe(found)}"


async def open_first_thread(dashboard: Dashboard) -> None:
    await dashboard.items.first.click()
    await expect(dashboard.messages.first).to_be_visible()


async def open_readers(dashboard: Dashboard) -> None:
    await dashboard.items.filter(has_text="Broadcast").first.click()
    await dashboard.page.locator("#messages .receipt").first.click()
    await expect(dashboard.page.locator("#readers-summary")).not_to_be_empty()


async def open_menu(dashboard: Dashboard) -> None:
    await dashboard.page.click("#menu-button")
    await expect(dashboard.page.locator("#menu")).to_be_visible()


async def open_account(dashboard: Dashboard) -> None:
    await dashboard.choose("#account-open")
    await expect(dashboard.page.locator("#account")).to_be_visible()
    await expect(dashboard.page.locator("#my-devices-list li").first).to_be_visible()


async def open_users(dashboard: Dashboard) -> None:
    await dashboard.choose("#users-open")
    await expect(dashboard.page.locator("#users")).to_be_visible()
    await expect(dashboard.page.locator("#users-list li").first).to_be_visible()


async def open_notifications(dashboard: Dashboard) -> None:
    await dashboard.choose("#notifications-open")
    await expect(dashboard.page.locator("#notifications")).to_be_visible()
    await expect(dashboard.page.locator("#notifications-status")).not_to_be_empty()


async def list_shown(dashboard: Dashboard) -> None:
    await expect(dashboard.items.first).to_be_visible()


SIGNED_IN_VIEWS: dict[str, Callable[[Dashboard], Awaitable[None]]] = {
    "conversation list": list_shown,
    "open thread": open_first_thread,
    "menu open": open_menu,
    "who read a broadcast": open_readers,
    "my account": open_account,
    "users": open_users,
    "notifications": open_notifications,
}


async def test_axe_reports_what_it_finds(dashboards: Dashboards) -> None:
    dashboard = await dashboards.new()
    await dashboard.page.evaluate(
        "() => { const image = document.createElement('img'); image.src = '/static/none.png';"
        " image.id = 'axe-probe'; document.querySelector('main, body').append(image); }"
    )
    found = await violations(dashboard.page)
    image_alt = [v for v in found if v["id"] == "image-alt"]
    assert image_alt, describe(found)
    assert ["#axe-probe"] in [n["target"] for n in image_alt[0]["nodes"]]
    assert await dashboard.page.evaluate("() => typeof window.axe.run") == "function"


async def test_login_page_has_no_violations(dashboards: Dashboards) -> None:
    await assert_no_violations(await dashboards.new(), "login page")


@pytest.mark.parametrize("view", list(SIGNED_IN_VIEWS))
async def test_signed_in_view_has_no_violations(dashboards: Dashboards, view: str) -> None:
    dashboard = await dashboards.signed_in(ADMIN)
    await SIGNED_IN_VIEWS[view](dashboard)
    await assert_no_violations(dashboard, view)


@pytest.mark.parametrize("who", [ADMIN, "medic1@demo.example"])
async def test_the_phone_views_have_no_violations(dashboards: Dashboards, who: str) -> None:
    """At phone width, the list and the broadcast (where a medic reads "Only admins post here")."""
    dashboard = await dashboards.signed_in(who, viewport=PHONE, mobile=True)
    await assert_no_violations(dashboard, "phone list")
    await dashboard.items.filter(has_text="Broadcast").first.click()
    await expect(dashboard.page.locator("#thread-title")).to_have_text("Broadcast")
    await assert_no_violations(dashboard, "phone broadcast")
