"""Several tabs of the app in one browser: one leader holds the socket and delivers the outbox.

Every tab shows the same state at once (the store's changes go to every tab), a message sent
from any tab goes out once, and when the leader closes another tab takes over. Without Web
Locks (removed by an init script) a lease in localStorage elects the leader instead.
"""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import expect

from tests.web.pages import TIMEOUT, Api, Dashboards
from tests.web.phones import Phones

ADMIN = "admin@demo.example"
NO_WEB_LOCKS = "Object.defineProperty(Navigator.prototype, 'locks', { get: () => undefined });"


@pytest.mark.parametrize("locks", ["web-locks", "lease"])
async def test_two_tabs_one_socket_one_delivery_the_same_state(
    phones: Phones, dashboards: Dashboards, api: Api, locks: str
) -> None:
    admin_account = await api.login(ADMIN)
    medic = await api.create_medic(admin_account, f"Two Tabs {locks}")
    phone = await phones.new(init_scripts=(NO_WEB_LOCKS,) if locks == "lease" else ())
    first = phone.dashboard
    await first.sign_in(medic.email, medic.password)
    second = await phone.tab()
    await expect(second.connection).to_have_attribute("data-state", "live")  # the leader's state
    assert len(phone.open_sockets()) == 1, "one socket for both tabs"
    if locks == "lease":
        assert await second.page.evaluate("() => navigator.locks === undefined")

    # Sent from the second tab (not the leader): delivered once, "sent" in both tabs.
    text = f"from the second tab ({locks})"
    await second.open(medic.conversation_id)
    await first.open(medic.conversation_id)
    await second.page.fill("#compose-text", text)
    await second.page.click("#send")  # a phone: Enter is a new line, the button sends
    for tab in (first, second):
        await expect(tab.message(text).locator(".status")).to_have_attribute("data-status", "sent")
    thread = await api.thread(admin_account, medic.conversation_id)
    assert [m["content"] for m in thread].count(text) == 1

    # The admin reads it: both tabs turn it "read".
    admin = await dashboards.signed_in(ADMIN)
    await admin.open(medic.conversation_id, f"Two Tabs {locks}")
    for tab in (first, second):
        await expect(tab.message(text).locator(".status")).to_have_attribute("data-status", "read")

    # The leader tab closes: the other one takes the socket over and still receives live.
    await first.page.close()
    await expect(second.connection).to_have_attribute("data-state", "live")
    await api.send(admin_account, medic.conversation_id, f"after the takeover ({locks})")
    await expect(second.message(f"after the takeover ({locks})")).to_have_count(1)
    for _ in range(int(TIMEOUT / 0.05)):  # the new leader's socket (the message may have come by pull)
        if phone.open_sockets():
            break
        await asyncio.sleep(0.05)
    assert len(phone.open_sockets()) == 1
