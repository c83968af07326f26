"""Broadcast receipts on the admin's page: "read by R of N" live, and who on request.

The count is the page's own, from read statuses and users the stream already carries; the
list comes from the server. A medic never sees a count, and their message in the broadcast
is never "read" because one medic read it.
"""

from __future__ import annotations

from playwright.async_api import expect

from tests.web.pages import Api, Dashboards

ADMIN = "admin@demo.example"


async def test_an_admin_sees_read_by_r_of_n_live_and_who_read_it(dashboards: Dashboards, api: Api) -> None:
    admin_account = await api.login(ADMIN)
    broadcast = await api.broadcast(admin_account)
    users = (await api.http.get("/v1/users", headers=admin_account.headers)).json()["users"]
    medics = [u for u in users if u["role"] == "medic" and u["active"]]
    reader = await api.create_medic(admin_account, "Receipt Reader")
    total = len(medics) + 1

    admin = await dashboards.signed_in(ADMIN)
    await admin.open(broadcast["id"], "Broadcast")
    text = "receipts: radio check at 16:00"
    await admin.page.fill("#compose-text", text)
    await admin.page.click("#send")
    receipt = admin.message(text).locator(".receipt")
    await expect(receipt).to_have_text(f"read by 0 of {total}")
    await expect(admin.message(text).locator(".status")).to_have_attribute("data-status", "sent")

    await api.mark_read(reader.account, broadcast["id"])
    await expect(receipt).to_have_text(f"read by 1 of {total}")  # live, no reload
    await expect(admin.message(text).locator(".status")).to_have_attribute("data-status", "sent")  # not all

    await receipt.click()
    dialog = admin.page.locator("#readers")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("#readers-summary")).to_have_text(f"1 of {total} have read it.")
    await expect(dialog.locator("#readers-read li")).to_have_count(1)
    await expect(dialog.locator("#readers-read")).to_contain_text("Receipt Reader")
    await expect(dialog.locator("#readers-unread li")).to_have_count(total - 1)
    await dialog.get_by_role("button", name="Close").click()

    medic = await dashboards.signed_in(reader.email, reader.password)
    await medic.open(broadcast["id"], "Broadcast")
    await expect(medic.message(text)).to_have_count(1)
    await expect(medic.message(text).locator(".receipt")).to_be_hidden()
    await expect(medic.page.locator("#read-only")).to_have_text("Only admins post here")
