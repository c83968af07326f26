"""The dashboard's views (views.js): incremental rendering, phone ergonomics, dates, links, titles.

- A phone (390x844, touch): Enter makes a new line and the Send button sends, the browser's
  Back returns from the thread to the list, the thread header is one row, tap targets are at
  least 44x44 px, and opening a thread does not focus the compose box (no keyboard pops up).
- On a desktop an incoming message adds exactly one node to the thread and keeps the reader's
  text selection and the nodes already shown.
- Day separators and full dates, links (http and https only, never javascript:), the unread
  total in the tab title, "You: " in my list previews, the polite announcement of a new
  message, failed messages with Retry and Delete, and the medics' read-only broadcast.
"""

from __future__ import annotations

import json
import uuid

from playwright.async_api import Route, expect

from tests.web.pages import TIMEOUT_MS, Api, Dashboards

PHONE = {"width": 390, "height": 844}
MUTATIONS = """() => {
  window.__mutations = {added: 0, removed: 0};
  new MutationObserver((records) => {
    for (const r of records) {
      window.__mutations.added += [...r.addedNodes].filter((n) => n.nodeType === 1).length;
      window.__mutations.removed += [...r.removedNodes].filter((n) => n.nodeType === 1).length;
    }
  }).observe(document.getElementById('messages'), {childList: true, subtree: true});
}"""
SELECT_BODY = """(text) => {
  const body = [...document.querySelectorAll('#messages li.message .body')].find((b) => b.textContent === text);
  body.__kept = 'the same node';
  const range = document.createRange();
  range.selectNodeContents(body);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  return selection.toString();
}"""
DAY_BEFORE = """(t) => {
  const li = [...document.querySelectorAll('#messages li.message')].find((m) => m.textContent.includes(t));
  let p = li.previousElementSibling;
  while (p && !p.classList.contains('day')) p = p.previousElementSibling;
  return p && p.textContent;
}"""


def tag() -> str:
    return uuid.uuid4().hex[:8]


async def test_a_phone_sends_with_the_button_and_goes_back_with_the_browser(dashboards: Dashboards, api: Api) -> None:
    t = tag()
    admin = await api.login("admin@demo.example")
    medic = await api.create_medic(admin, f"Phone Medic {t}")
    phone = await dashboards.signed_in(medic.email, medic.password, viewport=PHONE, mobile=True)
    page = phone.page
    assert await page.evaluate("matchMedia('(pointer: coarse)').matches")
    await phone.open(medic.conversation_id, "Admin")
    await expect(page.locator("#compose-text")).to_be_visible()
    # No keyboard popping up: the focus goes to the thread's title, not to the compose box.
    assert await page.evaluate("document.activeElement.id") == "thread-title"

    # Enter is a new line; the Send button sends.
    await page.tap("#compose-text")
    await page.keyboard.type(f"Line one {t}")
    await page.keyboard.press("Enter")
    await page.keyboard.type("line two")
    await expect(page.locator("#compose-text")).to_have_value(f"Line one {t}\nline two")
    await expect(phone.message(f"Line one {t}")).to_have_count(0)
    await page.tap("#send")
    await expect(phone.message(f"Line one {t}").locator(".status")).to_have_text("sent")
    body = phone.message(f"Line one {t}").locator(".body")
    assert await body.evaluate("(b) => b.textContent") == f"Line one {t}\nline two"

    # The thread header is one row: the back button and the title side by side.
    back, title = await page.locator("#back").bounding_box(), await page.locator("#thread-title").bounding_box()
    assert back and title
    assert title["x"] >= back["x"] + back["width"]
    assert abs((back["y"] + back["height"] / 2) - (title["y"] + title["height"] / 2)) < 4

    # The app's header is one row too: who, the connection, the unread total and the menu.
    boxes = [
        await page.locator(f"#{part}").bounding_box()
        for part in ("me-name", "connection", "unread-total", "menu-button")
    ]
    middles = [b["y"] + b["height"] / 2 for b in boxes if b]
    assert len(middles) == 4 and max(middles) - min(middles) < 4, boxes

    # Every control on screen is at least 44x44 px.
    for selector in ("#back", "#send", "#menu-button", "#compose-text"):
        box = await page.locator(selector).bounding_box()
        assert box and box["width"] >= 44 and box["height"] >= 44, (selector, box)

    # The browser's Back returns to the list inside the app.
    await page.go_back()
    await expect(page.locator("#thread-pane")).to_be_hidden()
    await expect(phone.item(medic.conversation_id)).to_be_visible()
    await expect(phone.item(medic.conversation_id).locator("button")).to_be_focused()
    item = await phone.item(medic.conversation_id).locator("button").bounding_box()
    assert item and item["height"] >= 44
    await page.click("#menu-button")
    await expect(page.locator("#menu-button")).to_have_attribute("aria-expanded", "true")
    for selector in ("#account-open", "#sign-out"):
        box = await page.locator(selector).bounding_box()
        assert box and box["width"] >= 44 and box["height"] >= 44, (selector, box)

    # On the list, the browser's Back leaves the app as usual (no extra history entries).
    await page.keyboard.press("Escape")
    await page.go_back()
    await page.wait_for_url("about:blank")


async def test_an_incoming_message_adds_one_node_and_keeps_the_selection(dashboards: Dashboards, api: Api) -> None:
    t = tag()
    admin_account = await api.login("admin@demo.example")
    medic = await api.create_medic(admin_account, f"Selection Medic {t}")
    first = f"Select this text {t}"
    await api.send(medic.account, medic.conversation_id, first)
    admin = await dashboards.signed_in("admin@demo.example")
    page = admin.page
    # After signing in, focus is on the list's first conversation.
    assert await page.evaluate("document.activeElement.matches('#conversations li:first-child > button')")
    await admin.open(medic.conversation_id, f"Selection Medic {t}")
    await expect(admin.message(first)).to_have_count(1)
    assert await page.evaluate(SELECT_BODY, first) == first
    await page.evaluate(MUTATIONS)

    second = f"Arrives while selecting {t}"
    await api.send(medic.account, medic.conversation_id, second)
    await expect(admin.message(second)).to_have_count(1)
    await expect(page.locator("#announcer")).to_have_text(f"New message from Selection Medic {t}")
    assert await page.evaluate("window.getSelection().toString()") == first
    kept = await admin.message(first).locator(".body").evaluate("(b) => b.__kept")
    assert kept == "the same node"
    assert await page.evaluate("window.__mutations") == {"added": 1, "removed": 0}


async def test_days_full_dates_and_links(dashboards: Dashboards, api: Api) -> None:
    t = tag()
    admin_account = await api.login("admin@demo.example")
    medic = await api.create_medic(admin_account, f"Links Medic {t}")
    text = f"Map at https://example.org/site?b=1. Not javascript:alert(1) nor <a href=x>x</a> {t}"
    await api.send(medic.account, medic.conversation_id, text)
    admin = await dashboards.signed_in("admin@demo.example")
    page = admin.page
    await admin.open(medic.conversation_id, f"Links Medic {t}")
    message = admin.message(t)
    await expect(message).to_have_count(1)

    # Today's messages come after a "Today" separator; the time carries the full date.
    separator = await page.evaluate(DAY_BEFORE, t)
    assert separator == "Today"
    time = message.locator("time")
    created = await time.get_attribute("datetime")
    stored = await api.thread(medic.account, medic.conversation_id)
    assert created and created[:10] == str(stored[-1]["created_at"])[:10]
    full = await time.get_attribute("title")
    assert full and created[:4] in full
    stamp = message.locator(".stamp")
    await expect(stamp).to_be_hidden()
    await message.locator(".meta").click()  # a tap shows the full date and time
    await expect(stamp).to_be_visible()
    await expect(stamp).to_have_text(full)

    # The day labels for older days.
    labels = await page.evaluate(
        """async () => {
          const { dayLabel } = await import('/static/format.js');
          const now = new Date(2026, 4, 20, 12, 0);
          const at = (d) => new Date(2026, 4, d, 9, 30).toISOString();
          return [dayLabel(at(20), now), dayLabel(at(19), now), dayLabel(at(16), now), dayLabel(at(1), now)];
        }"""
    )
    assert labels[:2] == ["Today", "Yesterday"]
    assert labels[2] == await page.evaluate("new Date(2026, 4, 16).toLocaleDateString(undefined, {weekday: 'long'})")
    assert "2026" in labels[3]

    # One link, to the http(s) URL only, opened safely; the text is unchanged.
    links = message.locator(".body a")
    await expect(links).to_have_count(1)
    await expect(links).to_have_attribute("href", "https://example.org/site?b=1")
    await expect(links).to_have_attribute("target", "_blank")
    await expect(links).to_have_attribute("rel", "noopener noreferrer")
    await expect(links).to_have_text("https://example.org/site?b=1")
    assert await message.locator(".body").evaluate("(b) => b.textContent") == text


async def test_unread_in_the_title_and_my_previews(dashboards: Dashboards, api: Api) -> None:
    t = tag()
    admin_account = await api.login("admin@demo.example")
    medic = await api.create_medic(admin_account, f"Title Medic {t}")
    admin = await dashboards.signed_in("admin@demo.example")
    await api.send_many(medic.account, medic.conversation_id, [f"One {t}", f"Two {t}"])
    await expect(admin.badge(medic.conversation_id)).to_have_text("2")
    total = await admin.total()
    assert total >= 2
    await expect(admin.page).to_have_title(f"({total}) SiteComms")
    await expect(admin.item(medic.conversation_id).locator(".you")).to_be_hidden()

    await admin.open(medic.conversation_id, f"Title Medic {t}")
    await expect(admin.page).to_have_title(f"({total - 2}) SiteComms" if total > 2 else "SiteComms")
    await admin.send(f"Reply {t}")
    await expect(admin.item(medic.conversation_id).locator(".preview")).to_have_text(f"Reply {t}")
    await expect(admin.item(medic.conversation_id).locator(".you")).to_be_visible()
    await expect(admin.item(medic.conversation_id).locator(".line")).to_have_text(f"You: Reply {t}")


async def test_a_medic_reads_the_broadcast_without_a_compose_box(dashboards: Dashboards, api: Api) -> None:
    admin_account = await api.login("admin@demo.example")
    medic = await api.create_medic(admin_account, f"Broadcast Medic {tag()}")
    broadcast = await api.broadcast(medic.account)
    page = await dashboards.signed_in(medic.email, medic.password)
    await page.open(broadcast["id"], broadcast["name"])
    await expect(page.page.locator("#read-only")).to_have_text("Only admins post here")
    await expect(page.page.locator("#compose")).to_be_hidden()
    await page.open(medic.conversation_id, "Admin")
    await expect(page.page.locator("#read-only")).to_be_hidden()
    await expect(page.page.locator("#compose")).to_be_visible()


async def test_a_refused_message_can_be_retried_or_deleted(dashboards: Dashboards, api: Api) -> None:
    t = tag()
    admin_account = await api.login("admin@demo.example")
    medic = await api.create_medic(admin_account, f"Refused Medic {t}")
    dashboard = await dashboards.signed_in(medic.email, medic.password)
    page = dashboard.page
    await dashboard.open(medic.conversation_id, "Admin")

    async def refuse(route: Route) -> None:
        body = json.dumps({"error": {"code": "forbidden", "message": "not allowed here"}})
        await route.fulfill(status=403, content_type="application/json", body=body)

    await page.route("**/v1/messages", refuse)
    for text in (f"Retry me {t}", f"Delete me {t}"):
        await dashboard.send(text)
        await expect(dashboard.message(text).locator(".status")).to_have_text("not sent: not allowed here")
    await page.unroute("**/v1/messages", refuse)

    await dashboard.message(f"Delete me {t}").get_by_role("button", name="Delete").click()
    await expect(dashboard.message(f"Delete me {t}")).to_have_count(0)
    await dashboard.message(f"Retry me {t}").get_by_role("button", name="Retry").click()
    await expect(dashboard.message(f"Retry me {t}").locator(".status")).to_have_text("sent")
    await expect(dashboard.message(f"Retry me {t}").get_by_role("button", name="Retry")).to_be_hidden()
    stored = [m["content"] for m in await api.thread(medic.account, medic.conversation_id)]
    assert stored.count(f"Retry me {t}") == 1
    assert f"Delete me {t}" not in stored


FULL_OUTBOX = """(on) => {
  if (!window.__add) window.__add = IDBObjectStore.prototype.add;
  IDBObjectStore.prototype.add = on
    ? function (...args) {
        if (this.name === "outbox") throw new DOMException("the quota was exceeded", "QuotaExceededError");
        return window.__add.apply(this, args);
      }
    : window.__add;
}"""


async def test_a_message_the_device_cannot_store_stays_in_the_box(dashboards: Dashboards, api: Api) -> None:
    t = tag()
    admin_account = await api.login("admin@demo.example")
    medic = await api.create_medic(admin_account, f"Full Phone {t}")
    dashboard = await dashboards.signed_in(medic.email, medic.password)
    page = dashboard.page
    await dashboard.open(medic.conversation_id, "Admin")
    text = f"Typed on a full phone {t}"
    await page.evaluate(FULL_OUTBOX, True)
    await page.fill("#compose-text", text)
    await page.click("#send")
    await expect(page.locator("#notice")).to_be_visible()
    await expect(page.locator("#notice-text")).to_contain_text("could not be saved on this device")
    await expect(page.locator("#compose-text")).to_have_value(text)  # nothing typed is lost
    await expect(dashboard.message(text)).to_have_count(0)

    await page.evaluate(FULL_OUTBOX, False)  # space freed: the same text goes out
    await page.click("#send")
    await expect(dashboard.message(text).locator(".status")).to_have_text("sent")
    await expect(page.locator("#compose-text")).to_have_value("")


NOTIFICATIONS_STUB = """(() => {
  window.__asked = 0; window.__shown = []; window.__hidden = false;
  class StubNotification {
    constructor(title, options) { window.__shown.push([title, options.body]); window.__last = this; }
    close() { this.closed = true; }
  }
  StubNotification.permission = 'default';
  StubNotification.requestPermission = async () => {
    window.__asked += 1; StubNotification.permission = 'granted'; return 'granted';
  };
  window.Notification = StubNotification;
  navigator.setAppBadge = async (count) => { window.__badge = count; };
  navigator.clearAppBadge = async () => { window.__badge = 0; };
  Object.defineProperty(document, 'visibilityState', {get: () => (window.__hidden ? 'hidden' : 'visible')});
})()"""


async def test_notifications_are_asked_for_from_the_menu_and_shown_by_the_page_while_hidden_without_push(
    dashboards: Dashboards, api: Api
) -> None:
    t = tag()
    admin_account = await api.login("admin@demo.example")
    medic = await api.create_medic(admin_account, f"Notify Medic {t}")
    admin = await dashboards.new()
    page = admin.page
    await page.add_init_script(script=NOTIFICATIONS_STUB)
    await admin.goto()
    await admin.sign_in("admin@demo.example")
    assert await page.evaluate("window.__asked") == 0  # never on load
    await admin.choose("#notifications-open")  # the dialog says why; its button asks
    await expect(page.locator("#notifications-why")).to_be_visible()
    assert await page.evaluate("window.__asked") == 0
    await page.click("#notifications-enable")
    await page.wait_for_function("() => window.__asked === 1", timeout=TIMEOUT_MS)
    await page.click("#notifications-close")

    await api.send(medic.account, medic.conversation_id, f"While visible {t}")
    await expect(admin.badge(medic.conversation_id)).to_have_text("1")
    await page.evaluate("window.__hidden = true")
    await api.send(medic.account, medic.conversation_id, f"While hidden {t}")
    await expect(admin.badge(medic.conversation_id)).to_have_text("2")
    assert await page.evaluate("window.__badge") == await admin.total()  # the app badge too
    shown = await page.evaluate("window.__shown")
    assert shown == [[f"Notify Medic {t} · SiteComms", f"While hidden {t}"]]
    # Clicking the notification opens its conversation (and closes the notification).
    await page.evaluate("window.__hidden = false; window.__last.onclick()")
    await expect(page.locator("#thread-title")).to_have_text(f"Notify Medic {t}")
    assert await page.evaluate("window.__last.closed") is True
