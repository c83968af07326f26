"""Push notifications in Chromium (web/static/push.js, notices.js and the worker's push handling in web/sw.js).

Headless Chromium has no push service, so the pages' `PushManager.prototype.subscribe` and
`getSubscription` are stubbed (an init script) to hand out a subscription of the local RFC 8030
double (`sitecomms.bench.push_service`): the server's real pushes land there, checked and
decrypted, and the test gives each payload to the service worker through the DevTools protocol
(`ServiceWorker.deliverPushMessage`), as the browser's push service would. What the worker
shows is read back with `registration.getNotifications()`; a tap is a `notificationclick` with
that notification, dispatched in the worker. The server runs with its default: content-free
pushes, so the worker fetches the text with the phone's own session.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import BrowserContext, CDPSession, Page, Playwright, Worker, expect

from sitecomms.bench.push_service import PushService
from tests.web.conftest import demo_site
from tests.web.pages import TIMEOUT, TIMEOUT_MS, Account, Api, Medic, Site, assert_clean
from tests.web.phones import Phone, Phones

STUB_KEY = "push-test.subscription"  # localStorage: the stubbed subscription of this profile
# The pages' PushManager hands out `subscription` (from the double), remembers it per profile and
# records how it was asked for; Notification.requestPermission counts its calls.
PUSH_STUB = """(subscription) => {
  const key = %(key)s;
  const decode = (text) => Uint8Array.from(atob(text.replace(/-/g, '+').replace(/_/g, '/')),
    (c) => c.charCodeAt(0)).buffer;
  const make = (held) => ({
    endpoint: held.endpoint, expirationTime: null,
    options: { userVisibleOnly: true, applicationServerKey: decode(held.applicationServerKey) },
    toJSON: () => ({ endpoint: held.endpoint, expirationTime: null, keys: held.keys }),
    unsubscribe: async () => { localStorage.removeItem(key); return true; },
  });
  PushManager.prototype.subscribe = async function (options) {
    window.__subscribed = {
      userVisibleOnly: options.userVisibleOnly, applicationServerKey: options.applicationServerKey };
    localStorage.setItem(key, JSON.stringify({ ...subscription, applicationServerKey: options.applicationServerKey }));
    return make(JSON.parse(localStorage.getItem(key)));
  };
  PushManager.prototype.getSubscription = async function () {
    const held = localStorage.getItem(key);
    return held ? make(JSON.parse(held)) : null;
  };
  window.__asked = 0;
  const ask = Notification.requestPermission.bind(Notification);
  Notification.requestPermission = (...args) => { window.__asked += 1; return ask(...args); };
}"""
# In the worker, installed once: every notification it shows (its tag, once shown) and every app
# badge it sets are recorded; `__after(n)` resolves once n notifications have been shown. (Polling
# getNotifications() while the worker shows one races headless Chromium's clean-up of
# notifications it has not displayed yet, so the test reads them only after they were shown.)
OBSERVE = """() => {
  const shown = [], badges = [], waiting = [];
  const wake = () => waiting.splice(0).forEach((check) => check());
  const show = registration.showNotification.bind(registration);
  registration.showNotification = async (title, options) => {
    await show(title, options);
    shown.push(options.tag);
    wake();
  };
  navigator.setAppBadge = async (count) => { badges.push(count); wake(); };
  navigator.clearAppBadge = async () => { badges.push(0); wake(); };
  self.__after = (count) => new Promise((resolve) => {
    const check = () => (shown.length >= count ? resolve({ shown: [...shown] }) : waiting.push(check));
    check();
  });
  self.__badgeAfter = (count) => new Promise((resolve) => {
    const check = () => (badges.length >= count ? resolve(badges[count - 1]) : waiting.push(check));
    check();
  });
}"""
# In the worker: its notifications tagged `tag` (all when null).
NOTIFICATIONS = """async (tag) => (await registration.getNotifications(tag ? { tag } : {}))
  .map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data }))"""
# In the worker: a tap on the notification tagged `tag` (the event's waitUntil is the test's to await).
CLICK = """async (tag) => {
  const [notification] = await registration.getNotifications({ tag });
  const event = new NotificationEvent('notificationclick', { notification });
  let extended = Promise.resolve();
  Object.defineProperty(event, 'waitUntil', { value: (promise) => { extended = promise; } });
  dispatchEvent(event);
  await extended;
}"""
TAG_PREFIX = "sitecomms.conversation."  # notices.js tagFor


@pytest.fixture(scope="module")
async def push_service() -> AsyncIterator[PushService]:
    async with PushService() as service:
        yield service


@pytest.fixture(scope="module")
async def push_site(tmp_path_factory: pytest.TempPathFactory, push_service: PushService) -> AsyncIterator[Site]:
    async with demo_site(
        tmp_path_factory.mktemp("push-web"),
        SITECOMMS_PUSH_ALLOWED_HOSTS="127.0.0.1",
        SITECOMMS_PUSH_CA_FILE=str(push_service.ca_file),
    ) as site:
        yield site


@pytest.fixture
async def push_api(push_site: Site) -> AsyncIterator[Api]:
    client = Api(push_site.base_url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def push_phones(playwright_driver: Playwright, push_site: Site, tmp_path: Path) -> AsyncIterator[Phones]:
    made = Phones(playwright_driver, push_site, tmp_path)
    WORKER_ERRORS.clear()
    try:
        yield made
    finally:
        await made.close()
    assert_clean(made.opened)
    assert not WORKER_ERRORS, f"the service worker reported: {WORKER_ERRORS}"


WORKER_ERRORS: list[str] = []  # what the app's workers reported (a CSP refusal among them): none, checked per test


class PushChannel:
    """The browser's push service for one phone, played through the DevTools protocol; it also
    records the errors the worker reports (in WORKER_ERRORS)."""

    def __init__(self, cdp: CDPSession, origin: str, registration_id: str) -> None:
        self.cdp, self.origin, self.registration_id = cdp, origin, registration_id

    @classmethod
    async def open(cls, page: Page, origin: str) -> PushChannel:
        """Once the app's worker (scope /) is activated and running."""
        cdp = await page.context.new_cdp_session(page)
        loop = asyncio.get_running_loop()
        registration: asyncio.Future[str] = loop.create_future()
        running: dict[str, asyncio.Future[None]] = {}

        def version_future(registration_id: str) -> asyncio.Future[None]:
            return running.setdefault(registration_id, loop.create_future())

        def registrations(event: dict[str, Any]) -> None:
            for r in event["registrations"]:
                if r["scopeURL"] == origin + "/" and not r["isDeleted"] and not registration.done():
                    registration.set_result(r["registrationId"])

        def versions(event: dict[str, Any]) -> None:
            for v in event["versions"]:
                if v["status"] == "activated" and v["runningStatus"] == "running":
                    future = version_future(v["registrationId"])
                    if not future.done():
                        future.set_result(None)

        cdp.on("ServiceWorker.workerRegistrationUpdated", registrations)
        cdp.on("ServiceWorker.workerVersionUpdated", versions)
        cdp.on("ServiceWorker.workerErrorReported", lambda e: WORKER_ERRORS.append(e["errorMessage"]["errorMessage"]))
        await cdp.send("ServiceWorker.enable")
        async with asyncio.timeout(TIMEOUT):
            registration_id = await registration
            await version_future(registration_id)
        return cls(cdp, origin, registration_id)

    async def deliver(self, payload: bytes) -> None:
        data = {"origin": self.origin, "registrationId": self.registration_id, "data": payload.decode()}
        await self.cdp.send("ServiceWorker.deliverPushMessage", data)


class PushPhone:
    """A signed-in phone with notifications allowed, its push channel, worker and subscription."""

    def __init__(self, phone: Phone, channel: PushChannel, worker: Worker, subscription_id: str) -> None:
        self.phone, self.channel, self.worker, self.subscription_id = phone, channel, worker, subscription_id

    @property
    def page(self) -> Page:
        return self.phone.dashboard.page

    async def enable(self) -> None:
        """Menu, Notifications, Enable: the permission is asked for only by that tap."""
        dashboard = self.phone.dashboard
        assert await self.page.evaluate("window.__asked") == 0
        await expect(self.page.locator("#notifications-open")).to_have_text("Enable notifications")
        await dashboard.choose("#notifications-open")
        await expect(self.page.locator("#notifications-why")).to_contain_text("while the app is closed")
        await expect(self.page.locator("#notifications-status")).to_have_text("Notifications are off for this device.")
        assert await self.page.evaluate("window.__asked") == 0  # not on opening the dialog either
        await self.page.click("#notifications-enable")
        await expect(self.page.locator("#notifications-status")).to_have_text("Notifications are on for this device.")
        assert await self.page.evaluate("window.__asked") == 1
        await expect(self.page.locator("#notifications-disable")).to_be_visible()
        await self.page.click("#notifications-close")
        await expect(self.page.locator("#notifications-open")).to_have_text("Notifications")

    async def shown_after(self, count: int) -> list[str]:
        """The tags of the notifications the worker has shown, once it has shown `count` of them."""
        async with asyncio.timeout(TIMEOUT):
            return list((await self.worker.evaluate("(count) => self.__after(count)", count))["shown"])

    async def badge_after(self, count: int) -> int:
        """The `count`-th app badge the worker set."""
        async with asyncio.timeout(TIMEOUT):
            return int(await self.worker.evaluate("(count) => self.__badgeAfter(count)", count))

    async def notifications(self, tag: str | None) -> list[dict[str, Any]]:
        """The worker's notifications tagged `tag` (all when None)."""
        return list(await self.worker.evaluate(NOTIFICATIONS, tag))


async def push_phone(phones: Phones, site: Site, service: PushService, medic: Medic) -> PushPhone:
    async with httpx.AsyncClient(base_url=site.base_url, timeout=TIMEOUT) as http:
        response = await http.get("/v1/push/key", headers=medic.account.headers)
        assert response.status_code == 200, response.text
        key = response.json()["public_key"]
    subscription = service.subscribe(key)
    stub = f"({PUSH_STUB % {'key': json.dumps(STUB_KEY)}})({json.dumps(subscription)})"
    phone = await phones.new(init_scripts=(stub,), permissions=("notifications",))
    assert phone.context is not None
    await phone.dashboard.sign_in(medic.email, medic.password)
    page = phone.dashboard.page
    channel = await PushChannel.open(page, site.base_url)
    worker = await _app_worker(phone.context)
    await worker.evaluate(OBSERVE)
    return PushPhone(phone, channel, worker, PushService.subscription_id(subscription["endpoint"]))


async def _app_worker(context: BrowserContext) -> Worker:
    for worker in context.service_workers:
        if worker.url.endswith("/sw.js"):
            return worker
    started: Worker = await context.wait_for_event(
        "serviceworker", lambda w: w.url.endswith("/sw.js"), timeout=TIMEOUT_MS
    )
    return started


async def _payload_of(service: PushService, subscription_id: str, message_id: str) -> bytes:
    """The decrypted payload of the push the server sent this subscription for that message."""

    def ours(s: PushService) -> list[bytes]:
        return [
            r.payload
            for r in s.received
            if r.subscription_id == subscription_id and r.payload and _notice(r.payload).get("message_id") == message_id
        ]

    await service.wait_for(lambda s: bool(ours(s)), TIMEOUT)
    [payload] = ours(service)  # exactly one push for this device and message
    return payload


def _notice(payload: bytes | None) -> dict[str, Any]:
    return dict(json.loads(payload)) if payload else {}


async def _unread_total(api: Api, who: Account) -> int:
    return sum(int(c["unread_count"] or 0) for c in await api.conversations(who))


async def _subscriptions(api: Api, who: Account) -> list[dict[str, Any]]:
    response = await api.http.get("/v1/push/subscriptions", headers=who.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["subscriptions"])


def _tag(conversation_id: str) -> str:
    return TAG_PREFIX + conversation_id


def _short() -> str:
    return uuid.uuid4().hex[:6]


async def test_a_content_free_push_shows_the_admins_first_words_sets_the_badge_and_a_tap_opens_the_conversation(
    push_phones: Phones, push_site: Site, push_service: PushService, push_api: Api
) -> None:
    t = _short()
    admin = await push_api.login("admin@demo.example")
    medic = await push_api.create_medic(admin, f"Pushed Medic {t}")
    phone = await push_phone(push_phones, push_site, push_service, medic)
    await phone.enable()
    key = (await push_api.http.get("/v1/push/key", headers=medic.account.headers)).json()["public_key"]
    assert await phone.page.evaluate("window.__subscribed") == {"userVisibleOnly": True, "applicationServerKey": key}
    [held] = await _subscriptions(push_api, medic.account)
    assert PushService.subscription_id(held["endpoint"]) == phone.subscription_id

    text = f"Evacuate the east car park now {t}, everyone to the assembly point by the north gate"
    sent = await push_api.send(admin, medic.conversation_id, text)
    payload = await _payload_of(push_service, phone.subscription_id, sent["id"])
    notice = _notice(payload)
    assert notice["conversation_id"] == medic.conversation_id
    assert "text" not in notice and "sender" not in notice  # private by default: the worker fetches it
    await phone.channel.deliver(payload)
    assert await phone.shown_after(1) == [_tag(medic.conversation_id)]
    [shown] = await phone.notifications(_tag(medic.conversation_id))
    assert shown["title"].startswith(f"Admin: Evacuate the east car park now {t},")
    assert shown["title"].endswith("…") and len(shown["title"]) < len("Admin: " + text)
    assert shown["body"] == text
    assert shown["data"]["conversation_id"] == medic.conversation_id
    badge = await phone.badge_after(1)
    assert badge == await _unread_total(push_api, medic.account) >= 1

    # A second message replaces the conversation's notification (one tag per conversation).
    second = await push_api.send(admin, medic.conversation_id, f"Short one {t}")
    await phone.channel.deliver(await _payload_of(push_service, phone.subscription_id, second["id"]))
    await phone.shown_after(2)
    [replaced] = await phone.notifications(_tag(medic.conversation_id))
    assert (replaced["title"], replaced["body"]) == (f"Admin: Short one {t}", "")

    # The tap: the open page (at the list) shows that conversation, and the notification goes.
    await expect(phone.page.locator("#panes")).to_have_attribute("data-view", "list")
    async with asyncio.timeout(TIMEOUT):
        await phone.worker.evaluate(CLICK, _tag(medic.conversation_id))
    conversation = await push_api.conversation(medic.account, medic.conversation_id)
    await expect(phone.page.locator("#thread-title")).to_have_text(conversation["name"])
    await expect(phone.phone.dashboard.message(f"Short one {t}")).to_have_count(1)
    assert await phone.notifications(_tag(medic.conversation_id)) == []


async def test_no_notification_for_the_conversation_a_focused_page_shows_and_payload_text_or_new_message_otherwise(
    push_phones: Phones, push_site: Site, push_service: PushService, push_api: Api
) -> None:
    t = _short()
    admin = await push_api.login("admin@demo.example")
    medic = await push_api.create_medic(admin, f"Reading Medic {t}")
    phone = await push_phone(push_phones, push_site, push_service, medic)
    await phone.enable()
    conversation = await push_api.conversation(medic.account, medic.conversation_id)
    await phone.phone.dashboard.open(medic.conversation_id, conversation["name"])
    await phone.page.evaluate(
        "() => { window.__workerAsked = 0;"
        " navigator.serviceWorker.addEventListener('message', () => { window.__workerAsked += 1; }); }"
    )

    sent = await push_api.send(admin, medic.conversation_id, f"Seen already {t}")
    await phone.channel.deliver(await _payload_of(push_service, phone.subscription_id, sent["id"]))
    # The worker asked the page, which answered that it shows this conversation: no notification.
    await phone.page.wait_for_function("() => window.__workerAsked === 1", timeout=TIMEOUT_MS)
    await expect(phone.phone.dashboard.message(f"Seen already {t}")).to_have_count(1)

    # Another conversation's push is shown (this page does not show that one).
    broadcast = await push_api.broadcast(admin)
    announced = await push_api.send(admin, broadcast["id"], f"To everyone {t}")
    await phone.channel.deliver(await _payload_of(push_service, phone.subscription_id, announced["id"]))
    assert await phone.shown_after(1) == [_tag(broadcast["id"])]  # the suppressed one was never shown
    [shown] = await phone.notifications(_tag(broadcast["id"]))
    assert shown["title"] == f"Admin: To everyone {t}"
    assert await phone.notifications(_tag(medic.conversation_id)) == []

    # Text in the payload (the server's include-content setting) is used as it is, with no fetch;
    # a message the worker cannot find shows "New message".
    elsewhere = str(uuid.uuid4())
    with_text = {"type": "message", "org_id": "o", "conversation_id": elsewhere, "message_id": str(uuid.uuid4()),
                 "cursor": "1", "sender": "Admin", "text": f"From the payload {t}"}  # fmt: skip
    await phone.channel.deliver(json.dumps(with_text).encode())
    await phone.shown_after(2)
    [from_payload] = await phone.notifications(_tag(elsewhere))
    assert (from_payload["title"], from_payload["body"]) == (f"Admin: From the payload {t}", "")
    unknown = {**with_text, "conversation_id": str(uuid.uuid4())}
    del unknown["sender"], unknown["text"]
    await phone.channel.deliver(json.dumps(unknown).encode())
    await phone.shown_after(3)
    [bare] = await phone.notifications(_tag(unknown["conversation_id"]))
    assert (bare["title"], bare["body"]) == ("New message", "")
    await phone.channel.deliver(b"not a notice")  # unreadable: still a notification, never the browser's generic one
    assert (await phone.shown_after(4))[-1] == "sitecomms"
    [unreadable] = await phone.notifications("sitecomms")
    assert unreadable["title"] == "New message"


async def test_push_stays_on_across_a_restart_and_turning_off_or_signing_out_deletes_it_and_unsubscribes(
    push_phones: Phones, push_site: Site, push_service: PushService, push_api: Api
) -> None:
    t = _short()
    admin = await push_api.login("admin@demo.example")
    medic = await push_api.create_medic(admin, f"Leaving Medic {t}")
    phone = await push_phone(push_phones, push_site, push_service, medic)
    stored = f"() => localStorage.getItem({json.dumps(STUB_KEY)}) !== null"

    async def held() -> bool:
        return bool(await phone.page.evaluate(stored))

    await phone.enable()
    [before] = await _subscriptions(push_api, medic.account)
    assert await held()

    # A restart keeps it on: the app gives the server the same subscription again (the same row).
    restarted = await phone.phone.restart()
    await expect(restarted.connection).to_have_attribute("data-state", "live")
    await expect(phone.page.locator("#notifications-open")).to_have_text("Notifications")
    assert await _subscriptions(push_api, medic.account) == [before]

    await phone.phone.dashboard.choose("#notifications-open")
    await phone.page.click("#notifications-disable")
    await expect(phone.page.locator("#notifications-status")).to_have_text("Notifications are off for this device.")
    assert await _subscriptions(push_api, medic.account) == []
    assert not await held()
    await phone.page.click("#notifications-close")
    await expect(phone.page.locator("#notifications-open")).to_have_text("Enable notifications")

    await phone.page.evaluate("window.__asked = 0")
    await phone.enable()  # on again; then signing out takes it away
    assert len(await _subscriptions(push_api, medic.account)) == 1 and await held()
    await phone.phone.dashboard.sign_out()
    await expect(phone.page.locator("#login-email")).to_be_visible()
    assert await _subscriptions(push_api, medic.account) == []
    assert not await held()


async def test_a_tap_with_the_app_closed_opens_it_on_that_conversation(
    push_phones: Phones, push_site: Site, push_service: PushService, push_api: Api
) -> None:
    """The worker opens /?conversation=<id> when no page is open; the app shows it and tidies the address."""
    t = _short()
    admin = await push_api.login("admin@demo.example")
    medic = await push_api.create_medic(admin, f"Closed Medic {t}")
    phone = await push_phone(push_phones, push_site, push_service, medic)
    await push_api.send(admin, medic.conversation_id, f"Open me {t}")
    page = phone.page
    await page.goto(f"{push_site.base_url}/?conversation={medic.conversation_id}")
    conversation = await push_api.conversation(medic.account, medic.conversation_id)
    await expect(page.locator("#thread-title")).to_have_text(conversation["name"])
    await expect(phone.phone.dashboard.message(f"Open me {t}")).to_have_count(1)
    assert page.url == push_site.base_url + "/"


# In the worker: the browser's push service replaced the subscription. The worker's PushManager
# hands out `renewed` (a new one of the double); the event carries the old one's options.
SUBSCRIPTION_CHANGED = """async ({ renewed, key }) => {
  PushManager.prototype.subscribe = async (options) => {
    self.__resubscribed = { userVisibleOnly: options.userVisibleOnly, key: options.applicationServerKey };
    return { endpoint: renewed.endpoint, toJSON: () => renewed };
  };
  const event = new Event('pushsubscriptionchange');
  Object.defineProperty(event, 'oldSubscription', { value: { options: { applicationServerKey: key } } });
  let extended = Promise.resolve();
  Object.defineProperty(event, 'waitUntil', { value: (promise) => { extended = promise; } });
  dispatchEvent(event);
  await extended;
  return self.__resubscribed;
}"""
WINDOWS = "async () => (await clients.matchAll({ type: 'window', includeUncontrolled: true })).length"


async def test_with_the_app_closed_a_push_still_shows_the_admins_first_words(
    push_phones: Phones, push_site: Site, push_service: PushService, push_api: Api
) -> None:
    """No page of the app open (the phone in a pocket): the worker alone fetches the text with the
    device's stored session and shows it."""
    t = _short()
    admin = await push_api.login("admin@demo.example")
    medic = await push_api.create_medic(admin, f"Pocket Medic {t}")
    phone = await push_phone(push_phones, push_site, push_service, medic)
    await phone.enable()
    context = phone.phone.context
    assert context is not None
    # The browser's push service is played from a blank tab (not a window of the app).
    blank = await context.new_page()
    cdp = await context.new_cdp_session(blank)
    await cdp.send("ServiceWorker.enable")
    channel = PushChannel(cdp, push_site.base_url, phone.channel.registration_id)
    await phone.page.close()
    async with asyncio.timeout(TIMEOUT):
        assert await phone.worker.evaluate(WINDOWS) == 0, "no page of the app is open"

    sent = await push_api.send(admin, medic.conversation_id, f"Evacuate the east car park {t}")
    payload = await _payload_of(push_service, phone.subscription_id, sent["id"])
    assert "text" not in _notice(payload)
    await channel.deliver(payload)
    assert await phone.shown_after(1) == [_tag(medic.conversation_id)]
    [shown] = await phone.notifications(_tag(medic.conversation_id))
    assert (shown["title"], shown["body"]) == (f"Admin: Evacuate the east car park {t}", "")
    assert await phone.badge_after(1) == await _unread_total(push_api, medic.account) >= 1


async def test_a_replaced_push_subscription_is_renewed_with_the_same_key_and_the_server_told(
    push_phones: Phones, push_site: Site, push_service: PushService, push_api: Api
) -> None:
    t = _short()
    admin = await push_api.login("admin@demo.example")
    medic = await push_api.create_medic(admin, f"Renewed Medic {t}")
    phone = await push_phone(push_phones, push_site, push_service, medic)
    await phone.enable()
    [before] = await _subscriptions(push_api, medic.account)
    key = (await push_api.http.get("/v1/push/key", headers=medic.account.headers)).json()["public_key"]
    renewed = push_service.subscribe(key)
    async with asyncio.timeout(TIMEOUT):
        asked = await phone.worker.evaluate(SUBSCRIPTION_CHANGED, {"renewed": renewed, "key": key})
    assert asked == {"userVisibleOnly": True, "key": key}
    [after] = await _subscriptions(push_api, medic.account)  # the session's one subscription, replaced
    assert after["endpoint"] == renewed["endpoint"] != before["endpoint"]

    sent = await push_api.send(admin, medic.conversation_id, f"After the change {t}")
    await _payload_of(push_service, PushService.subscription_id(renewed["endpoint"]), sent["id"])
