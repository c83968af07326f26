"""The web dashboard in a real browser (Chromium) against a real `sitecomms serve`.

One server with the demo organisation serves the whole module; every test signs its users in
through the login form, in fresh browser contexts. Tests that need a clean conversation create
a medic of their own; counts on shared conversations are compared with what the page showed
before the action. Screenshots of the main views go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import re
import struct
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from playwright.async_api import Request, Response, Route, WebSocket, expect

from tests.servers import aserving
from tests.web.pages import TIMEOUT, TIMEOUT_MS, Api, Dashboard, Dashboards, Site

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
LIVE_WITHIN = 1.0  # seconds from Enter on one page to the message on the other (the bar)
IDLE_SECONDS = 30.0
RECONNECT_TIMEOUT_MS = 30_000  # the page's backoff grows while the server is down (at most 10 s)

MINE = re.compile(r"\bmine\b")  # the class of my own messages
BODY_IS = "(text) => [...document.querySelectorAll('#messages li .body')].some((b) => b.textContent === text)"
TWO_FRAMES = "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"
SCROLL_TO_TOP = "() => { document.getElementById('messages').scrollTop = 0; }"


def tag() -> str:
    return uuid.uuid4().hex[:8]


def read_of(conversation_id: str) -> Callable[[Response], bool]:
    """Matches the page's POST that marks a conversation read."""
    return lambda r: r.request.method == "POST" and r.url.endswith(f"/v1/conversations/{conversation_id}/read")


async def rendered(dashboard: Dashboard) -> None:
    """Until the page has rendered twice more (its renders run on animation frames)."""
    await asyncio.wait_for(dashboard.page.evaluate(TWO_FRAMES), TIMEOUT)


async def send_and_time(sender: Dashboard, receiver: Dashboard, text: str) -> float:
    """Type `text` on one page, press Enter, and return the seconds until the other page shows it."""
    compose = sender.page.locator("#compose-text")
    await compose.fill(text)
    started = time.monotonic()
    await compose.press("Enter")
    await receiver.page.wait_for_function(BODY_IS, arg=text, timeout=TIMEOUT_MS)
    elapsed = time.monotonic() - started
    print(f"live latency, Enter to shown on the other page: {elapsed * 1000:.0f} ms")  # shown with -s
    return elapsed


# ---- live both ways -----------------------------------------------------------------------


async def test_messages_reach_the_other_side_live_both_ways(dashboards: Dashboards, api: Api) -> None:
    admin_account = await api.login("admin@demo.example")
    tomas = await api.login("medic2@demo.example")
    admin2 = await api.login("admin2@demo.example")
    maya_id = (await api.conversation_named(admin_account, "Maya Lindqvist"))["id"]
    tomas_id = (await api.conversation_named(admin_account, "Tomás Reyes"))["id"]
    broadcast_id = (await api.broadcast(admin_account))["id"]

    admin = await dashboards.signed_in("admin@demo.example")
    medic = await dashboards.signed_in("medic1@demo.example")
    await admin.open(maya_id, "Maya Lindqvist")
    await medic.open(maya_id, "Admin")  # a medic's direct conversation is "Admin" to them
    await medic.page.click("#menu-button")
    await expect(medic.page.locator("#account-open")).to_be_visible()
    await expect(medic.page.locator("#add-user-open")).to_be_hidden()
    await medic.page.keyboard.press("Escape")
    admin_total = await admin.total()
    tomas_unread = await admin.badge_count(tomas_id)

    # The medic writes; the admin has her conversation open.
    text = f"Two more casualties at site B, need a stretcher ({tag()})"
    latency = await send_and_time(medic, admin, text)
    assert latency < LIVE_WITHIN, f"the admin saw the medic's message after {latency:.3f} s"
    await expect(admin.message(text).locator(".sender")).to_have_text("Maya Lindqvist")
    await expect(admin.message(text)).not_to_have_class(MINE)
    await expect(admin.items.first).to_have_attribute("data-id", maya_id)
    await expect(admin.item(maya_id).locator(".preview")).to_have_text(text)
    await expect(admin.badge(maya_id)).to_be_hidden()  # open and at the bottom: read at once
    await expect(admin.unread_total).to_have_text(str(admin_total))
    # The medic's own copy: one item (the optimistic one, reconciled), read by the admin.
    await expect(medic.message(text)).to_have_count(1)
    await expect(medic.message(text)).to_have_class(MINE)
    await expect(medic.message(text).locator(".sender")).to_have_text("You")
    await expect(medic.message(text).locator(".status")).to_have_text("read")
    assert (await api.conversation(admin_account, maya_id))["unread_count"] == 0

    # Another medic writes into a conversation the admin does not have open.
    other = f"North gate: all quiet, radio battery low ({tag()})"
    await api.send(tomas, tomas_id, other)
    await expect(admin.items.first).to_have_attribute("data-id", tomas_id)
    await expect(admin.items.nth(1)).to_have_attribute("data-id", maya_id)
    await expect(admin.item(tomas_id).locator(".preview")).to_have_text(other)
    await expect(admin.badge(tomas_id)).to_have_text(str(tomas_unread + 1))
    await expect(admin.unread_total).to_have_text(str(admin_total + 1))
    await expect(admin.page.locator("#thread-title")).to_have_text("Maya Lindqvist")
    await expect(admin.message(other)).to_have_count(0)

    # The other way: the admin answers in the open thread.
    medic_total = await medic.total()
    broadcast_unread = await medic.badge_count(broadcast_id)
    reply = f"Stretcher team leaves in five minutes ({tag()})"
    latency = await send_and_time(admin, medic, reply)
    assert latency < LIVE_WITHIN, f"the medic saw the admin's message after {latency:.3f} s"
    await expect(medic.message(reply).locator(".sender")).to_have_text("Admin")
    await expect(medic.items.first).to_have_attribute("data-id", maya_id)
    await expect(medic.item(maya_id).locator(".preview")).to_have_text(reply)
    await expect(medic.badge(maya_id)).to_be_hidden()
    await expect(admin.message(reply).locator(".status")).to_have_text("read")
    # ...and a broadcast reaches the medic's list (not open) and header badge.
    notice = f"Radio check moves to 15:00 on channel 3 ({tag()})"
    await api.send(admin2, broadcast_id, notice)
    await expect(medic.items.first).to_have_attribute("data-id", broadcast_id)
    await expect(medic.item(broadcast_id).locator(".preview")).to_have_text(notice)
    await expect(medic.badge(broadcast_id)).to_have_text(str(broadcast_unread + 1))
    await expect(medic.unread_total).to_have_text(str(medic_total + 1))
    await expect(medic.page.locator("#thread-title")).to_have_text("Admin")


# ---- screenshots (early, while the demo data is tidy) ----------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def no_horizontal_overflow(dashboard: Dashboard) -> None:
    widths = await dashboard.page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page is wider than the screen: {widths}"


async def test_screenshots_of_the_main_views(dashboards: Dashboards, api: Api) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    maya_id = (await api.conversation_named(await api.login("admin@demo.example"), "Maya Lindqvist"))["id"]
    shots: dict[str, tuple[int, int]] = {}

    login = await dashboards.new()
    await login.page.screenshot(path=SCREENSHOTS / "login.png")
    shots["login.png"] = (1280, 800)

    admin = await dashboards.signed_in("admin@demo.example")
    await admin.open(maya_id, "Maya Lindqvist")
    await expect(admin.messages.first).to_be_visible()
    await admin.page.screenshot(path=SCREENSHOTS / "admin-desktop.png")
    shots["admin-desktop.png"] = (1280, 800)

    medic = await dashboards.signed_in("medic1@demo.example")
    await medic.open(maya_id, "Admin")
    await expect(medic.messages.first).to_be_visible()
    await medic.page.screenshot(path=SCREENSHOTS / "medic-desktop.png")
    shots["medic-desktop.png"] = (1280, 800)

    phone = await dashboards.signed_in("medic1@demo.example", viewport={"width": 390, "height": 844}, mobile=True)
    await expect(phone.items.first).to_be_visible()
    await expect(phone.page.locator("#thread-pane")).to_be_hidden()
    await no_horizontal_overflow(phone)
    await phone.page.screenshot(path=SCREENSHOTS / "phone-list.png")
    shots["phone-list.png"] = (390, 844)
    await phone.open(maya_id, "Admin")
    await expect(phone.page.locator(".list-pane")).to_be_hidden()
    await expect(phone.page.locator("#back")).to_be_visible()
    await expect(phone.page.locator("#compose-text")).to_be_visible()
    await expect(phone.messages.last).to_be_in_viewport()
    await no_horizontal_overflow(phone)
    await phone.page.screenshot(path=SCREENSHOTS / "phone-thread.png")
    shots["phone-thread.png"] = (390, 844)
    await phone.page.click("#back")
    await expect(phone.items.first).to_be_visible()
    await expect(phone.page.locator("#thread-pane")).to_be_hidden()

    for name, size in shots.items():
        assert png_size(SCREENSHOTS / name) == size, name


# ---- no polling ---------------------------------------------------------------------------


async def test_an_idle_page_makes_no_requests_and_keeps_its_socket(dashboards: Dashboards) -> None:
    dashboard = await dashboards.new()
    sockets: list[WebSocket] = []
    dashboard.page.on("websocket", lambda socket: sockets.append(socket))
    await dashboard.sign_in("admin2@demo.example")
    assert [s.url for s in sockets] == [dashboard.base_url.replace("http://", "ws://") + "/v1/realtime"]
    socket = sockets[0]
    pongs: list[str | bytes] = []
    socket.on("framesent", lambda payload: pongs.append(payload) if payload == '{"type":"pong"}' else None)
    requests: list[Request] = []

    def record(request: Request) -> None:
        requests.append(request)

    dashboard.page.on("request", record)
    await asyncio.sleep(IDLE_SECONDS)  # the subject of the test: nothing may happen meanwhile
    idle = [f"{r.method} {r.url.removeprefix(dashboard.base_url)}" for r in requests]
    # Playwright reports a WebSocket as a "websocket" event, never as a request: any request
    # here is HTTP (polling, a refetch, a reconnect's sync).
    assert idle == []
    assert len(sockets) == 1, "the page opened another socket"
    assert not socket.is_closed()
    await expect(dashboard.connection).to_have_attribute("data-state", "live")
    assert pongs, "the server pings an idle socket every 15 s: the page should have answered"

    # The recording works: a user action right after is seen (its thread's first page).
    async with dashboard.page.expect_request(lambda r: "/messages?" in r.url) as thread_page:
        await dashboard.items.first.click()
    assert await thread_page.value in requests


# ---- scrolling ------------------------------------------------------------------------------


async def test_auto_scroll_at_the_bottom_and_new_messages_marker_when_scrolled_up(
    dashboards: Dashboards, api: Api
) -> None:
    admin_account = await api.login("admin2@demo.example")
    t = tag()
    first = await api.create_medic(admin_account, f"Scroll A {t}")
    second = await api.create_medic(admin_account, f"Scroll B {t}")
    await api.send_many(first.account, first.conversation_id, [f"A filler {i:02d}" for i in range(40)])
    await api.send_many(second.account, second.conversation_id, [f"B filler {i:02d}" for i in range(45)])
    admin = await dashboards.new()
    sockets: list[WebSocket] = []
    admin.page.on("websocket", lambda socket: sockets.append(socket))
    await admin.sign_in("admin2@demo.example")
    marker = admin.page.locator("#new-marker")

    async with admin.page.expect_response(read_of(first.conversation_id)):
        await admin.open(first.conversation_id, f"Scroll A {t}")
    await expect(admin.message("A filler 39")).to_be_in_viewport()
    box = await admin.scroll_state()
    assert box["height"] > box["client"] + 300, f"the thread must be long enough to scroll: {box}"
    await admin.wait_at_bottom()

    # The page's next "read" request is held until the message after next is on the server: a
    # slow request must still mark read only what the reader saw, not what the server has.
    release = asyncio.Event()

    async def hold_read(route: Route) -> None:
        await asyncio.wait_for(release.wait(), TIMEOUT)
        await route.continue_()

    await admin.page.route(f"**/v1/conversations/{first.conversation_id}/read", hold_read)

    # At the bottom: a new message scrolls into view and is read.
    await api.send(first.account, first.conversation_id, "A live one")
    await expect(admin.message("A live one")).to_be_in_viewport()
    await admin.wait_at_bottom()
    await expect(marker).to_be_hidden()
    await expect(admin.badge(first.conversation_id)).to_be_hidden()

    # Scrolled up: the view stays, the marker appears, the message is unread.
    await admin.page.evaluate(SCROLL_TO_TOP)
    await expect(admin.message("A filler 00")).to_be_in_viewport()
    await api.send(first.account, first.conversation_id, "A live two")
    await expect(marker).to_be_visible()
    await expect(marker).to_have_text("New messages ↓")
    await expect(admin.message("A live two")).to_have_count(1)
    await expect(admin.message("A live two")).not_to_be_in_viewport()
    await expect(admin.message("A filler 00")).to_be_in_viewport()
    await expect(admin.badge(first.conversation_id)).to_have_text("1")

    # The held read ("A live one") goes through; the server echoes it on the socket.
    async with (
        admin.page.expect_response(read_of(first.conversation_id)) as held,
        sockets[0].expect_event(
            "framereceived", lambda frame: '"read_status.updated"' in str(frame), timeout=TIMEOUT_MS
        ),
    ):
        release.set()
    assert (await held.value).status == 200
    await rendered(admin)
    await expect(admin.badge(first.conversation_id)).to_have_text("1")
    assert (await api.conversation(admin_account, first.conversation_id))["unread_count"] == 1

    async with admin.page.expect_response(read_of(first.conversation_id)):
        await marker.click()
    await expect(admin.message("A live two")).to_be_in_viewport()
    await expect(marker).to_be_hidden()
    await expect(admin.badge(first.conversation_id)).to_be_hidden()
    assert (await api.conversation(admin_account, first.conversation_id))["unread_count"] == 0

    # Another conversation opens at its newest message, whatever the last one's scroll was.
    await admin.page.evaluate(SCROLL_TO_TOP)
    await expect(admin.message("A filler 00")).to_be_in_viewport()
    await admin.item(second.conversation_id).click()
    await expect(admin.page.locator("#thread-title")).to_have_text(f"Scroll B {t}")
    await expect(admin.message("B filler 44")).to_be_in_viewport()
    await admin.wait_at_bottom()
    await expect(marker).to_be_hidden()

    # Sending your own message while scrolled up brings you to the bottom.
    await admin.page.evaluate(SCROLL_TO_TOP)
    await expect(admin.message("B filler 00")).to_be_in_viewport()
    await admin.send("Received all of it, thanks")
    await expect(admin.message("Received all of it, thanks")).to_be_in_viewport()
    await expect(marker).to_be_hidden()


# ---- user content is text ---------------------------------------------------------------


MARKUP = '<script>window.__pwned=1</script> <img src=x onerror="window.__pwned=2"> <b>bold</b>'

INJECT_INLINE_SCRIPT = """() => {
  const script = document.createElement('script');
  script.textContent = 'window.__inline = 1';
  document.body.append(script);
}"""
CONTENT_FACTS = """([content, name]) => ({
  pwned: typeof window.__pwned,
  elements: document.querySelectorAll('#app script, #app img, #app b, #app i').length,
  bodies: [...document.querySelectorAll('#messages li .body')]
    .filter((b) => b.textContent === content && b.childElementCount === 0).length,
  previews: [...document.querySelectorAll('#conversations li .preview')]
    .filter((p) => p.textContent === content && p.childElementCount === 0).length,
  names: [...document.querySelectorAll('#conversations li .name, #messages li .sender, #thread-title, #me-name')]
    .filter((n) => n.textContent === name && n.childElementCount === 0).map((n) => n.id || n.className).sort(),
})"""


async def test_markup_in_messages_and_names_is_shown_as_text(dashboards: Dashboards, api: Api) -> None:
    t = tag()
    name = f'<img src=x onerror="window.__pwned=3"><i>Evil</i> Medic {t}'
    content = f"{MARKUP} {t}"
    assert len(content) <= 100, "short enough for the list preview to be the whole message"
    admin_account = await api.login("admin@demo.example")
    evil = await api.create_medic(admin_account, name)
    admin = await dashboards.signed_in("admin@demo.example")
    medic = await dashboards.signed_in(evil.email, evil.password)
    await expect(medic.page.locator("#me-name")).to_have_text(name)
    await expect(admin.item(evil.conversation_id).locator(".name")).to_have_text(name)

    await medic.open(evil.conversation_id, "Admin")
    await medic.send(content)
    await expect(medic.message(t).locator(".status")).to_have_text("sent")
    await expect(admin.item(evil.conversation_id).locator(".preview")).to_have_text(content)
    admin_list = await admin.page.evaluate(CONTENT_FACTS, [content, name])
    assert admin_list == {"pwned": "undefined", "elements": 0, "bodies": 0, "previews": 1, "names": ["name"]}

    await admin.open(evil.conversation_id, name)
    await expect(admin.message(t)).to_have_count(1)
    admin_thread = await admin.page.evaluate(CONTENT_FACTS, [content, name])
    assert admin_thread == {
        "pwned": "undefined",
        "elements": 0,
        "bodies": 1,
        "previews": 1,
        "names": ["name", "sender", "thread-title"],  # sorted
    }
    medic_thread = await medic.page.evaluate(CONTENT_FACTS, [content, name])
    assert medic_thread == {"pwned": "undefined", "elements": 0, "bodies": 1, "previews": 1, "names": ["me-name"]}

    # Behind that, the page's Content Security Policy: even a script that did get into the
    # page would not run.
    served = await api.http.get("/")
    assert served.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self';")
    assert served.headers["x-content-type-options"] == "nosniff"
    async with medic.page.expect_console_message(lambda m: "Content Security Policy" in m.text):
        await medic.page.evaluate(INJECT_INLINE_SCRIPT)
    assert await medic.page.evaluate("typeof window.__inline") == "undefined"
    medic.csp_violations.clear()  # that refusal was the point


# ---- the server goes away and comes back ----------------------------------------------------


async def test_reconnects_after_a_server_restart_and_delivers_the_queued_message_once(
    dashboards: Dashboards, api: Api, site: Site
) -> None:
    t = tag()
    admin_account = await api.login("admin@demo.example")
    medic = await api.create_medic(admin_account, f"Restart Medic {t}")
    broadcast_id = (await api.broadcast(medic.account))["id"]
    page = await dashboards.signed_in(medic.email, medic.password)
    await page.open(medic.conversation_id, "Admin")
    total = await page.total()

    await site.stop()
    await expect(page.connection).to_have_attribute("data-state", re.compile(r"^(reconnecting|offline)$"))
    queued = f"Typed while the server was down ({t})"
    await page.send(queued)
    await expect(page.message(queued)).to_have_class(MINE)
    await expect(page.message(queued).locator(".status")).to_have_text("queued")
    await expect(page.connection).to_contain_text("1 queued")

    # Others write meanwhile, through another server on the same database (the page cannot
    # reach it: it only knows its own origin).
    away = f"Call us when you are back in range ({t})"
    away_broadcast = f"Weather warning for the afternoon ({t})"
    async with aserving(site.env, site.directory / "side-server.log") as side:
        side_api = Api(side.base_url)
        try:
            side_admin = await side_api.login("admin@demo.example")
            await side_api.send(side_admin, medic.conversation_id, away)
            await side_api.send(side_admin, broadcast_id, away_broadcast)
        finally:
            await side_api.close()
    await expect(page.message(away)).to_have_count(0)
    await expect(page.connection).not_to_have_attribute("data-state", "live")

    await site.start_again()
    await expect(page.connection).to_have_attribute("data-state", "live", timeout=RECONNECT_TIMEOUT_MS)
    await expect(page.message(queued).locator(".status")).to_have_text("sent")
    await expect(page.connection).to_have_text("live")
    await expect(page.message(away)).to_have_count(1)
    await expect(page.message(queued)).to_have_count(1)
    await expect(page.messages.last).to_contain_text(queued)  # sent after the admin's, so after it
    await expect(page.item(broadcast_id).locator(".preview")).to_have_text(away_broadcast)
    await expect(page.unread_total).to_have_text(str(total + 1))  # the broadcast; the open thread is read
    stored = [m["content"] for m in await api.thread(medic.account, medic.conversation_id)]
    assert stored.count(queued) == 1
    assert stored.count(away) == 1


# ---- more of the product ---------------------------------------------------------------------


async def test_sign_out_returns_to_login_and_forgets_the_session(dashboards: Dashboards, api: Api) -> None:
    t = tag()
    admin_account = await api.login("admin@demo.example")
    shared = await api.create_medic(admin_account, f"Shared Screen {t}")
    mine = f"Checking in from the east road ({t})"
    await api.send(shared.account, shared.conversation_id, mine)
    await api.mark_read(shared.account, shared.conversation_id)  # the medic's own read position

    dashboard = await dashboards.new()
    sockets: list[WebSocket] = []
    dashboard.page.on("websocket", lambda socket: sockets.append(socket))
    await dashboard.sign_in("admin2@demo.example")
    await expect(dashboard.item(shared.conversation_id)).to_be_visible()
    closed = asyncio.Event()
    sockets[0].on("close", lambda _: closed.set())

    await dashboard.choose("#sign-out")
    await expect(dashboard.page.locator("#login")).to_be_visible()
    await expect(dashboard.page.locator("#app")).to_be_hidden()
    await expect(dashboard.page.locator("#login-email")).to_be_focused()
    assert await dashboard.stored_session() is None
    await asyncio.wait_for(closed.wait(), TIMEOUT)

    # The next person at this page (no reload) starts clean: nothing of the admin's session
    # carries over. Here: the admin's page knew the medic's own read position; to the medic
    # it is not a read receipt, so their message was not "read" by anyone.
    await dashboard.sign_in(shared.email, shared.password)
    await expect(dashboard.page.locator("#me-name")).to_have_text(f"Shared Screen {t}")
    await expect(dashboard.items).to_have_count(2)
    await dashboard.open(shared.conversation_id, "Admin")
    await expect(dashboard.message(mine).locator(".status")).to_have_text("sent")

    # Signed out, a reload does not sign anyone back in.
    await dashboard.choose("#sign-out")
    await expect(dashboard.page.locator("#login")).to_be_visible()
    await dashboard.page.reload()
    await expect(dashboard.page.locator("#login")).to_be_visible()
    await expect(dashboard.page.locator("#app")).to_be_hidden()
    assert await dashboard.stored_session() is None


async def test_a_wrong_password_shows_an_error(dashboards: Dashboards) -> None:
    dashboard = await dashboards.new()
    await dashboard.page.fill("#login-email", "admin@demo.example")
    await dashboard.page.fill("#login-password", "not-the-password")
    await dashboard.page.click("#login-form button[type=submit]")
    await expect(dashboard.page.locator("#login-error")).to_have_text("wrong email or password")
    await expect(dashboard.page.locator("#app")).to_be_hidden()
    assert await dashboard.stored_session() is None
    await dashboard.sign_in("admin@demo.example")
    await expect(dashboard.page.locator("#login-error")).to_have_text("")


async def test_opening_a_thread_marks_it_read_here_and_on_the_server(dashboards: Dashboards, api: Api) -> None:
    t = tag()
    admin_account = await api.login("admin2@demo.example")
    first = await api.create_medic(admin_account, f"Unread A {t}")
    second = await api.create_medic(admin_account, f"Unread B {t}")
    await api.send_many(first.account, first.conversation_id, ["one", "two", "three"])
    await api.send_many(second.account, second.conversation_id, ["four", "five"])
    dashboard = await dashboards.signed_in("admin2@demo.example")
    await expect(dashboard.badge(first.conversation_id)).to_have_text("3")
    await expect(dashboard.badge(second.conversation_id)).to_have_text("2")
    total = await dashboard.total()

    # One thread, then at once another: both reads reach the server.
    async with (
        dashboard.page.expect_response(read_of(first.conversation_id)) as first_read,
        dashboard.page.expect_response(read_of(second.conversation_id)) as second_read,
    ):
        await dashboard.item(first.conversation_id).click()
        await dashboard.item(second.conversation_id).click()
    assert (await first_read.value).status == 200
    assert (await second_read.value).status == 200
    await expect(dashboard.page.locator("#thread-title")).to_have_text(f"Unread B {t}")
    await expect(dashboard.badge(first.conversation_id)).to_be_hidden()
    await expect(dashboard.badge(second.conversation_id)).to_be_hidden()
    await expect(dashboard.unread_total).to_have_text(str(total - 5))
    server = {c["id"]: c["unread_count"] for c in await api.conversations(admin_account)}
    assert (server[first.conversation_id], server[second.conversation_id]) == (0, 0)


async def test_older_messages_load_on_scroll_up_in_order(dashboards: Dashboards, api: Api) -> None:
    t = tag()
    admin_account = await api.login("admin@demo.example")
    medic = await api.create_medic(admin_account, f"History {t}")
    everything = [f"History {i:03d}" for i in range(130)]  # more than the sync snapshot's 100
    await api.send_many(medic.account, medic.conversation_id, everything)
    dashboard = await dashboards.signed_in("admin2@demo.example")
    await dashboard.open(medic.conversation_id, f"History {t}")
    await expect(dashboard.message("History 129")).to_be_in_viewport()
    shown = await dashboard.messages.locator(".body").all_inner_texts()
    assert len(shown) < len(everything)
    assert shown == everything[-len(shown) :]
    top = shown[0]

    await dashboard.page.evaluate(SCROLL_TO_TOP)
    await expect(dashboard.messages).to_have_count(len(everything))
    assert await dashboard.messages.locator(".body").all_inner_texts() == everything
    await expect(dashboard.message(top)).to_be_in_viewport()  # the reader keeps their place
    await expect(dashboard.page.locator("#new-marker")).to_be_hidden()  # older is not new


async def test_a_scroll_to_the_top_while_the_first_page_loads_still_brings_the_older_ones(
    dashboards: Dashboards, api: Api
) -> None:
    """The reader scrolls up before the thread's first page is in (CI once did: the scroll was
    dropped, and nothing older ever came): the older pages follow once it is."""
    t = tag()
    admin_account = await api.login("admin@demo.example")
    medic = await api.create_medic(admin_account, f"Early scroll {t}")
    everything = [f"Early {i:03d}" for i in range(130)]  # more than the sync snapshot's 100
    await api.send_many(medic.account, medic.conversation_id, everything)
    dashboard = await dashboards.signed_in("admin2@demo.example")
    held, release = asyncio.Event(), asyncio.Event()

    async def hold_the_first(route: Route) -> None:
        if not held.is_set():
            held.set()
            await asyncio.wait_for(release.wait(), TIMEOUT)
        await route.continue_()

    await dashboard.page.route(f"**/v1/conversations/{medic.conversation_id}/messages*", hold_the_first)
    await dashboard.open(medic.conversation_id, f"Early scroll {t}")
    await asyncio.wait_for(held.wait(), TIMEOUT)
    await expect(dashboard.message("Early 129")).to_be_in_viewport()  # the snapshot's newest 100
    await dashboard.page.evaluate(SCROLL_TO_TOP)  # while the first page is held
    await expect(dashboard.messages).to_have_count(100)
    release.set()
    await expect(dashboard.messages).to_have_count(len(everything))
    assert await dashboard.messages.locator(".body").all_inner_texts() == everything


async def test_admin_adds_a_medic_who_appears_in_the_list_live(dashboards: Dashboards, api: Api) -> None:
    t = tag()
    name, email, password = f"Nadia Haddad {t}", f"nadia-{t}@web.example", "nadia-password"
    admin = await dashboards.signed_in("admin@demo.example")
    other_admin = await dashboards.signed_in("admin2@demo.example")
    dialog = admin.page.locator("#add-user")
    await admin.choose("#add-user-open")
    await expect(dialog).to_be_visible()
    await expect(admin.page.locator("#new-name")).to_be_focused()
    await admin.page.fill("#new-name", name)
    await admin.page.fill("#new-email", email)
    await admin.page.select_option("#new-role", "medic")
    await admin.page.fill("#new-password", password)
    requests: list[Request] = []
    admin.page.on("request", lambda request: requests.append(request))
    await admin.page.click("#add-user-submit")
    await expect(dialog).to_be_hidden()

    for dashboard in (admin, other_admin):
        added = dashboard.items.filter(has=dashboard.page.locator(".name", has_text=name))
        await expect(added).to_have_count(1)
        await expect(added.locator(".preview")).to_have_text("No messages yet")
    assert [(r.method, r.url.removeprefix(admin.base_url)) for r in requests] == [("POST", "/v1/users")]
    medic = await api.login(email, password)
    assert (medic.user["display_name"], medic.user["role"]) == (name, "medic")


async def test_keyboard_reaches_the_list_and_opens_a_conversation(dashboards: Dashboards, api: Api) -> None:
    t = tag()
    admin_account = await api.login("admin@demo.example")
    newcomer = await api.create_medic(admin_account, f"Keyboard {t}")
    dashboard = await dashboards.signed_in("admin@demo.example")
    page = dashboard.page
    for _ in range(10):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.matches('#conversations li > button')"):
            break
    else:
        raise AssertionError("Tab never reached the conversation list")
    focused = await page.evaluate("document.activeElement.closest('li').dataset.id")
    assert focused != newcomer.conversation_id
    name = await dashboard.item(focused).locator(".name").inner_text()

    # A message elsewhere re-sorts the list; the keyboard user keeps their place.
    await api.send(newcomer.account, newcomer.conversation_id, f"Hello from {t}")
    await expect(dashboard.items.first).to_have_attribute("data-id", newcomer.conversation_id)
    assert await page.evaluate("document.activeElement.closest('li').dataset.id") == focused

    await page.keyboard.press("Enter")
    await expect(page.locator("#thread-title")).to_have_text(name)
    await expect(page.locator("#compose-text")).to_be_focused()
    # Shift+Enter is a new line; Enter sends.
    await page.keyboard.type(f"First line {t}")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("second line")
    await expect(dashboard.messages.filter(has_text=f"First line {t}")).to_have_count(0)
    await page.keyboard.press("Enter")
    body = dashboard.message(f"First line {t}").locator(".body")
    await expect(body).to_have_count(1)
    assert await body.evaluate("(b) => b.textContent") == f"First line {t}\nsecond line"
    await expect(page.locator("#compose-text")).to_have_value("")


async def test_a_send_that_fails_while_the_socket_stays_live_is_retried(dashboards: Dashboards, api: Api) -> None:
    t = tag()
    admin_account = await api.login("admin@demo.example")
    medic = await api.create_medic(admin_account, f"Flaky Network {t}")
    dashboard = await dashboards.signed_in(medic.email, medic.password)
    await dashboard.open(medic.conversation_id, "Admin")
    failed = asyncio.Event()

    async def drop_first_send(route: Route) -> None:  # the network drops the first attempt only
        if failed.is_set():
            await route.continue_()
        else:
            failed.set()
            await route.abort("connectionreset")

    await dashboard.page.route("**/v1/messages", drop_first_send)
    text = f"Sent over a bad connection ({t})"
    await dashboard.send(text)
    await asyncio.wait_for(failed.wait(), TIMEOUT)
    await expect(dashboard.message(text).locator(".status")).to_have_text("queued")
    await expect(dashboard.connection).to_have_attribute("data-state", "live")
    # No reconnect happens (the socket is fine): the page must retry by itself.
    await expect(dashboard.message(text).locator(".status")).to_have_text("sent")
    await expect(dashboard.connection).to_have_text("live")
    stored = [m["content"] for m in await api.thread(medic.account, medic.conversation_id)]
    assert stored.count(text) == 1


async def test_a_send_the_server_refuses_stays_visible_and_marked_not_sent(dashboards: Dashboards, api: Api) -> None:
    t = tag()
    admin_account = await api.login("admin@demo.example")
    medic = await api.create_medic(admin_account, f"Refused Send {t}")
    dashboard = await dashboards.signed_in(medic.email, medic.password)
    await dashboard.open(medic.conversation_id, "Admin")

    async def refuse(route: Route) -> None:  # as the server answers a send it will never accept
        body = '{"error": {"code": "forbidden", "message": "not allowed here"}}'
        await route.fulfill(status=403, content_type="application/json", body=body)

    await dashboard.page.route("**/v1/messages", refuse)
    text = f"This one is refused ({t})"
    await dashboard.send(text)
    await expect(dashboard.message(text).locator(".status")).to_have_text("not sent: not allowed here")
    await expect(dashboard.connection).to_have_text("live")  # nothing left queued
    await dashboard.page.unroute("**/v1/messages")
    after = f"The next one goes through ({t})"
    await dashboard.send(after)
    await expect(dashboard.message(after).locator(".status")).to_have_text("sent")
    assert [m["content"] for m in await api.thread(medic.account, medic.conversation_id)] == [after]
