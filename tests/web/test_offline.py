"""The medic's phone offline: the durable outbox, the local store, and signing out of a shared phone.

Each test runs Chromium on a persistent profile (IndexedDB, the service worker and its caches
survive a restart, as on a phone) at phone width, against the module's real server. The
server is asked what it holds: every message typed offline reaches it exactly once, in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from playwright.async_api import Route, expect

from tests.web.pages import TIMEOUT, Api, Dashboard, Dashboards, Medic, Site
from tests.web.phones import Phone, Phones

ADMIN = "admin@demo.example"
OUTBOX_SYNC_TAG = "sitecomms-outbox"  # shell.js
RECONNECT_TIMEOUT_MS = 30_000  # the app's backoff grows while the server is down (at most 10 s, then a send's)


async def new_medic(api: Api, name: str) -> Medic:
    admin = await api.login(ADMIN)
    return await api.create_medic(admin, name)


async def contents_on_server(api: Api, medic: Medic, tagged: str) -> list[str]:
    """What the server holds in the medic's conversation (asked as an admin: her session may be gone)."""
    admin = await api.login(ADMIN)
    return [m["content"] for m in await api.thread(admin, medic.conversation_id) if tagged in m["content"]]


async def write(page: Dashboard, text: str) -> None:
    """Type a message and tap Send; returns once it is shown (queued, or further)."""
    await page.page.fill("#compose-text", text)
    await page.page.click("#send")
    await expect(page.message(text)).to_have_count(1)


async def test_three_messages_typed_offline_survive_a_browser_restart_and_go_out_once_in_order(
    phones: Phones, dashboards: Dashboards, api: Api
) -> None:
    """The issue's "done when": installed, signal lost, the last messages read, three written, the
    app closed, opened again later with signal: the three go out once, in order, seen live."""
    medic = await new_medic(api, "Offline Olga")
    admin = await dashboards.signed_in(ADMIN)
    await admin.open(medic.conversation_id, "Offline Olga")
    await api.send(await api.login(ADMIN), medic.conversation_id, "the last word before the tunnel olga")
    phone = await phones.signed_in(medic.email, medic.password)
    await phone.dashboard.open(medic.conversation_id)
    await phone.dashboard.page.evaluate("() => navigator.serviceWorker.ready.then(() => true)")  # installed

    await phone.dashboard.page.context.set_offline(True)
    await expect(phone.dashboard.connection).to_have_attribute("data-state", "offline")
    await phone.dashboard.page.reload()  # no signal: the app and what it held open from the phone
    await phone.dashboard.item(medic.conversation_id).click()
    await expect(phone.dashboard.message("the last word before the tunnel olga")).to_have_count(1)
    texts = [f"offline note {n} olga" for n in (1, 2, 3)]
    for text in texts:
        await write(phone.dashboard, text)
        await expect(phone.dashboard.message(text).locator(".status")).to_have_attribute("data-status", "queued")
    assert await contents_on_server(api, medic, "offline note") == []

    await phone.close()  # the app closed, the browser gone
    await phone.launch()  # later, with signal: signed in from the store
    await expect(phone.dashboard.connection).to_have_attribute("data-state", "live")
    for text in texts:  # the admin watching sees them arrive live
        await expect(admin.message(text)).to_have_count(1)
    assert await contents_on_server(api, medic, "offline note") == texts
    await phone.dashboard.open(medic.conversation_id)
    for text in texts:  # and the admin, who has the conversation open, has read them
        await expect(phone.dashboard.message(text).locator(".status")).to_have_attribute("data-status", "read")


async def test_a_refused_message_is_kept_failed_with_retry_and_delete(phones: Phones, api: Api) -> None:
    medic = await new_medic(api, "Refused Rita")
    phone = await phones.signed_in(medic.email, medic.password)
    await phone.dashboard.open(medic.conversation_id)
    # The server refuses it for good (a control character is not content): it is kept, marked failed.
    refused = "refused \u0007 rita"
    await write(phone.dashboard, refused)
    status = phone.dashboard.message(refused).locator(".status")
    await expect(status).to_have_attribute("data-status", "failed")
    await phone.dashboard.page.reload()
    await phone.dashboard.open(medic.conversation_id)
    await expect(phone.dashboard.message(refused).locator(".status")).to_have_attribute("data-status", "failed")
    await phone.dashboard.message(refused).get_by_role("button", name="Delete").click()
    await expect(phone.dashboard.message(refused)).to_have_count(0)
    assert await contents_on_server(api, medic, "rita") == []


async def test_sign_out_with_unsent_messages_warns_then_wipes_the_phone(phones: Phones, api: Api) -> None:
    medic = await new_medic(api, "Shared Sam")
    phone = await phones.signed_in(medic.email, medic.password)
    await phone.dashboard.open(medic.conversation_id)
    await phone.dashboard.page.context.set_offline(True)
    await write(phone.dashboard, "unsent sam")

    await phone.dashboard.sign_out()
    dialog = phone.dashboard.page.locator("#sign-out-confirm")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("1 message has not been sent")
    await dialog.get_by_role("button", name="Keep them and stay").click()
    await expect(phone.dashboard.message("unsent sam")).to_have_count(1)  # still signed in, still queued

    await phone.dashboard.page.context.set_offline(False)
    await expect(phone.dashboard.connection).to_have_attribute("data-state", "live")
    await expect(phone.dashboard.message("unsent sam").locator(".status")).to_have_attribute("data-status", "sent")
    await phone.dashboard.sign_out()  # nothing unsent: no warning
    await expect(phone.dashboard.page.locator("#login-email")).to_be_visible()
    assert await phone.dashboard.databases() == ["sitecomms"], "the user's store is deleted"
    assert await phone.dashboard.stored_session() is None
    assert [url for url in await phone.dashboard.cached_urls() if "/v1/" in url] == []
    sessions = await api.http.get("/v1/sessions", headers=medic.account.headers)
    assert all(not s["device"].startswith("Web") for s in sessions.json()["sessions"]), "revoked on the server"


async def test_an_expired_session_keeps_the_outbox_for_the_same_user_only(phones: Phones, api: Api) -> None:
    medic = await new_medic(api, "Expired Eve")
    other = await new_medic(api, "Other Otto")
    admin = await api.login(ADMIN)
    phone = await phones.signed_in(medic.email, medic.password)
    await phone.dashboard.open(medic.conversation_id)
    await phone.dashboard.page.context.set_offline(True)
    await write(phone.dashboard, "kept for eve")

    # Meanwhile the admin signs her out everywhere; the phone learns it when back online.
    revoked = await api.http.delete(f"/v1/users/{medic.account.id}/sessions", headers=admin.headers)
    assert revoked.status_code == 200, revoked.text
    await phone.dashboard.page.context.set_offline(False)
    await expect(phone.dashboard.page.locator("#login-email")).to_be_visible()
    assert await contents_on_server(api, medic, "eve") == []
    # Revoked (a lost phone?): what the server holds leaves the phone; only the unsent stays.
    held = await phone.dashboard.page.evaluate(WHAT_THE_STORE_HOLDS, medic.account.id)
    assert held == {"me": False, "cursor": False, "conversations": 0, "messages": 0, "users": 0, "outbox": 1}
    await phone.close()
    await phone.launch()  # and so it stays after a restart
    await expect(phone.dashboard.page.locator("#login-email")).to_be_visible()
    assert await phone.dashboard.page.evaluate(OUTBOX_OF, medic.account.id) == [["kept for eve", "queued"]]

    await phone.dashboard.sign_in(other.email, other.password)  # a colleague on the same phone
    await phone.dashboard.open(other.conversation_id)
    await expect(phone.dashboard.page.locator("#messages")).not_to_contain_text("kept for eve")
    assert await contents_on_server(api, other, "eve") == []
    await phone.dashboard.sign_out()

    await phone.dashboard.sign_in(medic.email, medic.password)  # she is back: her message goes out
    await phone.dashboard.open(medic.conversation_id)
    await expect(phone.dashboard.message("kept for eve").locator(".status")).to_have_attribute("data-status", "sent")
    assert await contents_on_server(api, medic, "eve") == ["kept for eve"]


STORE_SESSION_UNANNOUNCED = """async ([email, password]) => {
  const response = await fetch("/v1/auth/login", { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password, device: "Web · another tab" }) });
  const token = await response.json();
  const request = indexedDB.open("sitecomms");
  const db = await new Promise((ok, fail) => { request.onsuccess = () => ok(request.result); request.onerror = fail; });
  const tx = db.transaction("kv", "readwrite");
  tx.objectStore("kv").put({ access_token: token.access_token, refresh_token: token.refresh_token,
    session_id: token.session_id, user_id: token.user.id, expires_at: token.expires_at,
    refresh_at: Date.now() + 600000 }, "session");
  await new Promise((ok) => { tx.oncomplete = ok; });
  db.close();
}"""

OUTBOX_OF = """async (userId) => { const { Store } = await import("/static/store.js");
  const store = await Store.open(userId); const entries = await store.outbox(); store.close();
  return entries.map((e) => [e.content, e.status]); }"""


WHAT_THE_STORE_HOLDS = """async (userId) => { const { Store } = await import("/static/store.js");
  const store = await Store.open(userId); const all = await store.readAll(); store.close();
  return { me: Boolean(all.me), cursor: Boolean(all.cursor), conversations: all.conversations.length,
    messages: all.messages.length, users: all.users.length, outbox: all.outbox.length }; }"""


async def test_a_tab_that_missed_another_users_sign_in_never_sends_as_them(dashboards: Dashboards, api: Api) -> None:
    """A phone's tab asleep while its user was signed out and a colleague signed in (it missed the
    broadcast): when its session turns out to be over, it must not take up the colleague's."""
    mia = await new_medic(api, "Missed Mia")
    ned = await new_medic(api, "Next Ned")
    admin = await api.login(ADMIN)
    page = await dashboards.signed_in(mia.email, mia.password)
    await page.open(mia.conversation_id)
    await page.page.evaluate(STORE_SESSION_UNANNOUNCED, [ned.email, ned.password])
    await page.page.context.set_offline(True)
    await write(page, "only ever as mia")
    revoked = await api.http.delete(f"/v1/users/{mia.account.id}/sessions", headers=admin.headers)
    assert revoked.status_code == 200, revoked.text

    await page.page.context.set_offline(False)  # her session is over: the tab leaves, nothing sent as Ned
    await expect(page.page.locator("#login-email")).to_be_visible()
    assert await page.page.evaluate(OUTBOX_OF, mia.account.id) == [["only ever as mia", "queued"]]
    stored = await page.stored_session()
    assert stored is not None and stored["user_id"] == ned.account.id, "the colleague's session is his to end"
    assert await contents_on_server(api, mia, "mia") == []


async def away_from_the_app(phone: Phone) -> None:
    """Leave the app for a same-origin page that runs none of it, so a test can rewrite the
    store with no app code holding it open or reopening it at the current version meanwhile."""
    await phone.dashboard.page.goto(phone.site.base_url + "/docs")


async def test_a_store_written_by_the_first_schema_is_upgraded_with_its_data(phones: Phones, api: Api) -> None:
    medic = await new_medic(api, "Upgrade Uma")
    phone = await phones.signed_in(medic.email, medic.password)
    await phone.close()
    await phone.launch()
    await away_from_the_app(phone)
    # Replace her store with one the first version of the app wrote: a queued message, a
    # failed one, a message from the server, and the old single "others" read position.
    await phone.dashboard.page.evaluate(
        """async ([userId, conversationId]) => {
          const { UPGRADES, databaseName } = await import("/static/schema.js");
          const { openDatabase, deleteDatabase, committed } = await import("/static/idb.js");
          await deleteDatabase(databaseName(userId));
          const db = await openDatabase(databaseName(userId), UPGRADES, { version: 1 });
          const tx = db.transaction(["meta", "conversations", "messages", "reads", "outbox"], "readwrite");
          tx.objectStore("meta").put("stale-cursor", "cursor");
          tx.objectStore("outbox").add({ key: `${userId}:v1-queued`, idempotency_key: "v1-queued",
            conversation_id: conversationId, content: "written by version one uma", sender_id: userId,
            sender_name: "Upgrade Uma", created_at: new Date().toISOString() });
          tx.objectStore("outbox").add({ key: `${userId}:v1-failed`, idempotency_key: "v1-failed",
            conversation_id: conversationId, content: "refused in version one uma", sender_id: userId,
            sender_name: "Upgrade Uma", created_at: new Date().toISOString(), failed: "Not allowed" });
          tx.objectStore("reads").put({ conversation_id: conversationId, mine: 0, others: 7 });
          await committed(tx);
          db.close();
        }""",
        [medic.account.id, medic.conversation_id],
    )
    await phone.dashboard.page.goto(phone.site.base_url + "/")
    await expect(phone.dashboard.connection).to_have_attribute("data-state", "live")
    await phone.dashboard.open(medic.conversation_id)
    await expect(phone.dashboard.message("written by version one uma").locator(".status")).to_have_attribute(
        "data-status", "sent"
    )
    failed = phone.dashboard.message("refused in version one uma").locator(".status")
    await expect(failed).to_have_attribute("data-status", "failed")
    assert await contents_on_server(api, medic, "version one uma") == ["written by version one uma"]
    version = await phone.dashboard.page.evaluate(
        "async (name) => (await indexedDB.databases()).find((d) => d.name === name).version",
        f"sitecomms.user.{medic.account.id}",
    )
    assert version == 2
    cursor = await phone.dashboard.page.evaluate(
        """async (userId) => { const { Store } = await import("/static/store.js");
           const store = await Store.open(userId); const cursor = await store.getMeta("cursor");
           store.close(); return cursor; }""",
        medic.account.id,
    )
    assert cursor not in (None, "stale-cursor"), "the upgrade dropped the old cursor; a snapshot replaced it"


async def test_a_store_written_by_a_newer_version_starts_over_keeping_the_outbox(phones: Phones, api: Api) -> None:
    """A rollback: the phone's store has a newer schema than this code. The app still opens, and
    what the server does not have (the outbox) is kept and delivered once; the rest is synced."""
    medic = await new_medic(api, "Rollback Rob")
    admin = await api.login(ADMIN)
    await api.send(admin, medic.conversation_id, "from the admin rob")
    phone = await phones.signed_in(medic.email, medic.password)
    await away_from_the_app(phone)
    await phone.dashboard.page.evaluate(
        """async ([userId, conversationId]) => {
          const { UPGRADES, databaseName } = await import("/static/schema.js");
          const { openDatabase, deleteDatabase, committed } = await import("/static/idb.js");
          await deleteDatabase(databaseName(userId));
          const future = (db) => db.createObjectStore("something-new");
          const db = await openDatabase(databaseName(userId), [...UPGRADES, future]);
          const tx = db.transaction(["outbox", "something-new"], "readwrite");
          for (const [key, content, status] of [["n-queued", "queued by a newer version rob", "queued"],
                                                ["n-failed", "refused by a newer version rob", "failed"]]) {
            tx.objectStore("outbox").add({ key: `${userId}:${key}`, idempotency_key: key,
              conversation_id: conversationId, content, sender_id: userId, sender_name: "Rollback Rob",
              created_at: new Date().toISOString(), status, error: status === "failed" ? "Not allowed" : null,
              field_of_the_future: 1 });
          }
          tx.objectStore("something-new").put(1, "x");
          await committed(tx);
          db.close();
        }""",
        [medic.account.id, medic.conversation_id],
    )
    await phone.dashboard.page.goto(phone.site.base_url + "/")
    await expect(phone.dashboard.connection).to_have_attribute("data-state", "live")
    await phone.dashboard.open(medic.conversation_id)
    await expect(phone.dashboard.message("from the admin rob")).to_have_count(1)
    await expect(phone.dashboard.message("queued by a newer version rob").locator(".status")).to_have_attribute(
        "data-status", "sent"
    )
    failed = phone.dashboard.message("refused by a newer version rob").locator(".status")
    await expect(failed).to_have_attribute("data-status", "failed")
    assert await contents_on_server(api, medic, "newer version rob") == ["queued by a newer version rob"]


NEWER_SESSION_STORE = """() => new Promise((ok, fail) => {
  const request = indexedDB.open("sitecomms", 7);
  request.onupgradeneeded = () => request.result.createObjectStore("of-the-future");
  request.onsuccess = () => { request.result.close(); ok(true); };
  request.onerror = () => fail(request.error);
})"""


async def test_a_session_store_written_by_a_newer_version_still_lets_the_user_sign_in(phones: Phones, api: Api) -> None:
    medic = await new_medic(api, "Rollback Rhoda")
    phone = await phones.signed_in(medic.email, medic.password)
    await phone.dashboard.page.evaluate(NEWER_SESSION_STORE)
    await phone.dashboard.page.reload()
    await expect(phone.dashboard.page.locator("#login-email")).to_be_visible()
    await phone.dashboard.sign_in(medic.email, medic.password)
    await expect(phone.dashboard.connection).to_have_attribute("data-state", "live")
    stored = await phone.dashboard.stored_session()
    assert stored is not None and stored["user_id"] == medic.account.id


async def test_with_no_network_a_reload_opens_the_signed_in_app_with_what_it_held(
    phones: Phones, api: Api, site: Site
) -> None:
    medic = await new_medic(api, "Reload Rosa")
    admin = await api.login(ADMIN)
    await api.send(admin, medic.conversation_id, "read an hour ago rosa")
    phone = await phones.signed_in(medic.email, medic.password)
    page = phone.dashboard
    await page.open(medic.conversation_id)
    await expect(page.message("read an hour ago rosa")).to_have_count(1)
    await page.page.evaluate("() => navigator.serviceWorker.ready.then(() => true)")

    await site.stop()  # no server, no network at all
    try:
        await page.page.reload()
        await expect(page.page.locator("#app")).to_be_visible()
        await expect(page.connection).not_to_have_attribute("data-state", "live")
        await expect(page.item(medic.conversation_id)).to_be_visible()
        await page.item(medic.conversation_id).click()
        await expect(page.message("read an hour ago rosa")).to_have_count(1)
        await write(page, "written with no server rosa")
        await expect(page.message("written with no server rosa").locator(".status")).to_have_attribute(
            "data-status", "queued"
        )
    finally:
        await site.start_again()
    await expect(page.message("written with no server rosa").locator(".status")).to_have_attribute(
        "data-status", "sent", timeout=RECONNECT_TIMEOUT_MS
    )
    assert await contents_on_server(api, medic, "no server rosa") == ["written with no server rosa"]


async def test_the_server_down_across_a_browser_restart_then_delivered_once_it_is_back(
    phones: Phones, api: Api, site: Site
) -> None:
    medic = await new_medic(api, "Restart Rhea")
    phone = await phones.signed_in(medic.email, medic.password)
    await phone.dashboard.open(medic.conversation_id)
    await phone.dashboard.page.evaluate("() => navigator.serviceWorker.ready.then(() => true)")
    texts = ["down one rhea", "down two rhea"]
    await site.stop()
    try:
        for text in texts:
            await write(phone.dashboard, text)
        await phone.close()
        await phone.launch()  # the server still down: the app opens from the device
        await expect(phone.dashboard.page.locator("#app")).to_be_visible()
        await phone.dashboard.item(medic.conversation_id).click()
        for text in texts:
            await expect(phone.dashboard.message(text).locator(".status")).to_have_attribute("data-status", "queued")
    finally:
        await site.start_again()
    for text in texts:
        await expect(phone.dashboard.message(text).locator(".status")).to_have_attribute(
            "data-status", "sent", timeout=RECONNECT_TIMEOUT_MS
        )
    assert await contents_on_server(api, medic, "rhea") == texts


async def test_with_the_app_closed_background_sync_delivers_the_outbox(phones: Phones, api: Api) -> None:
    medic = await new_medic(api, "Background Bea")
    phone = await phones.signed_in(medic.email, medic.password)
    page = phone.dashboard.page
    await phone.dashboard.open(medic.conversation_id)
    await page.evaluate("() => navigator.serviceWorker.ready.then(() => true)")
    await page.context.set_offline(True)
    await write(phone.dashboard, "sent by the worker bea")
    assert phone.context is not None
    blank = await phone.context.new_page()  # the browser stays; the app's last tab closes
    await page.close()
    await phone.context.set_offline(False)  # Chromium may fire the sync itself now; CDP fires it surely

    cdp = await phone.context.new_cdp_session(blank)
    registrations: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    cdp.on("ServiceWorker.workerRegistrationUpdated", lambda event: registrations.put_nowait(event["registrations"]))
    await cdp.send("ServiceWorker.enable")
    registration = next(r for r in await asyncio.wait_for(registrations.get(), TIMEOUT) if not r["isDeleted"])
    sync = {"registrationId": registration["registrationId"], "tag": OUTBOX_SYNC_TAG, "lastChance": False}
    await cdp.send("ServiceWorker.dispatchSyncEvent", {"origin": phone.site.base_url, **sync})
    for _ in range(int(TIMEOUT / 0.1)):  # no app page is open: only the server can tell
        if await contents_on_server(api, medic, "bea"):
            break
        await asyncio.sleep(0.1)
    assert await contents_on_server(api, medic, "bea") == ["sent by the worker bea"]
    reopened = await phone.tab()
    await reopened.open(medic.conversation_id)
    await expect(reopened.message("sent by the worker bea").locator(".status")).to_have_attribute("data-status", "sent")
    assert await contents_on_server(api, medic, "bea") == ["sent by the worker bea"]


async def test_a_session_kept_by_the_previous_version_moves_to_indexeddb(phones: Phones, api: Api) -> None:
    medic = await new_medic(api, "Legacy Lena")
    signed_in = await api.http.post("/v1/auth/login", json={"email": medic.email, "password": medic.password})
    token = signed_in.json()
    phone = await phones.new()
    page = phone.dashboard.page
    await expect(page.locator("#login-email")).to_be_visible()
    legacy = {key: token[key] for key in ("access_token", "refresh_token", "session_id", "expires_at")}
    await page.evaluate("(value) => localStorage.setItem('sitecomms.token', JSON.stringify(value))", legacy)
    await page.reload()
    await expect(phone.dashboard.connection).to_have_attribute("data-state", "live")  # no sign-in asked
    assert await page.evaluate("() => localStorage.getItem('sitecomms.token')") is None
    stored = await phone.dashboard.stored_session()
    assert stored is not None and stored["user_id"] == medic.account.id


async def test_a_send_whose_answer_is_lost_is_sent_again_and_stored_once_in_order(phones: Phones, api: Api) -> None:
    """The server got the first of three sends but its answer was lost: retried with the same
    idempotency key, each message is on the server once, in the order typed."""
    medic = await new_medic(api, "Lost Lena")
    phone = await phones.signed_in(medic.email, medic.password)
    page = phone.dashboard
    await page.open(medic.conversation_id)
    await page.page.context.set_offline(True)
    texts = [f"lost answer {n} lena" for n in (1, 2, 3)]
    for text in texts:
        await write(page, text)
    lost = asyncio.Event()

    async def lose_the_first_answer(route: Route) -> None:
        if lost.is_set():
            await route.continue_()
            return
        await route.fetch()  # the server stores it...
        lost.set()
        await route.abort("connectionreset")  # ...and its answer never arrives

    await page.page.route("**/v1/messages", lose_the_first_answer)
    await page.page.context.set_offline(False)
    await asyncio.wait_for(lost.wait(), TIMEOUT)
    for text in texts:
        await expect(page.message(text).locator(".status")).to_have_attribute(
            "data-status", "sent", timeout=RECONNECT_TIMEOUT_MS
        )
    assert await contents_on_server(api, medic, "lost answer") == texts


async def test_a_conflict_asking_for_the_same_send_again_is_retried_not_failed(phones: Phones, api: Api) -> None:
    """409 `conflict` (a concurrent retry with the key was being stored) means "send it again";
    409 `idempotency_key_reused` and the other 4xx mean refused."""
    medic = await new_medic(api, "Conflict Cleo")
    phone = await phones.signed_in(medic.email, medic.password)
    page = phone.dashboard
    await page.open(medic.conversation_id)
    answered = asyncio.Event()

    async def conflict_once(route: Route) -> None:
        if answered.is_set():
            await route.continue_()
            return
        answered.set()
        body = {"error": {"code": "conflict", "message": "the message could not be stored; retry"}}
        await route.fulfill(status=409, json=body)

    await page.page.route("**/v1/messages", conflict_once)
    await write(page, "stored on the second try cleo")
    await asyncio.wait_for(answered.wait(), TIMEOUT)
    await expect(page.message("stored on the second try cleo").locator(".status")).to_have_attribute(
        "data-status", "sent", timeout=RECONNECT_TIMEOUT_MS
    )
    assert await contents_on_server(api, medic, "cleo") == ["stored on the second try cleo"]


async def test_a_browser_that_refuses_storage_gets_a_message_not_a_blank_page(phones: Phones, api: Api) -> None:
    medic = await new_medic(api, "Private Pia")
    phone = await phones.signed_in(medic.email, medic.password)
    await phone.close()
    refuse = "IDBFactory.prototype.open = function () { throw new DOMException('refused here', 'UnknownError'); };"
    phone.init_scripts.append(refuse)
    await phone.launch()
    await expect(phone.dashboard.page.locator("#login-error")).to_contain_text("could not open its storage")
    await expect(phone.dashboard.page.locator("#login")).to_be_visible()
