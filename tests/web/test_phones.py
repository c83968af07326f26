"""Phones on persistent profiles (tests/web/phones.py): what a restart keeps, and the request log.

A phone writes to IndexedDB and localStorage, quits Chromium and starts it again on the same
profile: both are still there. A signed-in phone is still signed in (and live) after a restart.
The request log sees a page's requests and a service worker's, and its quiet window ends at the
first request.
"""

from __future__ import annotations

import asyncio

from playwright.async_api import Route, expect

from tests.web.pages import TIMEOUT
from tests.web.phones import PHONE, Phones, RequestLog

WRITE = """async (value) => {
  localStorage.setItem("phones-test", value);
  const db = await new Promise((done, failed) => {
    const opening = indexedDB.open("phones-test", 1);
    opening.onupgradeneeded = () => opening.result.createObjectStore("things");
    opening.onsuccess = () => done(opening.result);
    opening.onerror = () => failed(opening.error);
  });
  await new Promise((done, failed) => {
    const writing = db.transaction("things", "readwrite");
    writing.objectStore("things").put({value}, "kept");
    writing.oncomplete = done;
    writing.onerror = () => failed(writing.error);
  });
  db.close();
}"""

READ = """async () => {
  const db = await new Promise((done, failed) => {
    const opening = indexedDB.open("phones-test", 1);
    opening.onupgradeneeded = () => opening.result.createObjectStore("things");
    opening.onsuccess = () => done(opening.result);
    opening.onerror = () => failed(opening.error);
  });
  const kept = await new Promise((done, failed) => {
    const reading = db.transaction("things").objectStore("things").get("kept");
    reading.onsuccess = () => done(reading.result ?? null);
    reading.onerror = () => failed(reading.error);
  });
  db.close();
  return {local: localStorage.getItem("phones-test"), indexed: kept && kept.value};
}"""

SCREEN = "() => ({width: innerWidth, touch: navigator.maxTouchPoints, coarse: matchMedia('(pointer: coarse)').matches})"

# A service worker made up by the test (the app has none yet), served through a route: it
# fetches the login page when it installs.
PROBE_WORKER = "self.addEventListener('install', (event) => event.waitUntil(fetch('/?from=worker')));"


async def test_indexeddb_and_localstorage_survive_a_restart(phones: Phones) -> None:
    phone = await phones.new()
    assert await asyncio.wait_for(phone.dashboard.page.evaluate(SCREEN), TIMEOUT) == {
        "width": PHONE["width"],
        "touch": 1,
        "coarse": True,
    }
    assert await asyncio.wait_for(phone.dashboard.page.evaluate(READ), TIMEOUT) == {"local": None, "indexed": None}
    await asyncio.wait_for(phone.dashboard.page.evaluate(WRITE, "kept across a restart"), TIMEOUT)

    restarted = await phone.restart()

    assert len(phone.launches) == 2 and restarted is phone.dashboard
    kept = await asyncio.wait_for(restarted.page.evaluate(READ), TIMEOUT)
    assert kept == {"local": "kept across a restart", "indexed": "kept across a restart"}


async def test_a_signed_in_phone_is_still_signed_in_after_a_restart(phones: Phones) -> None:
    phone = await phones.new()
    await phone.dashboard.sign_in("medic1@demo.example")

    restarted = await phone.restart()

    await expect(restarted.connection).to_have_attribute("data-state", "live")
    await expect(restarted.page.locator("#login-email")).to_be_hidden()


async def test_the_request_log_sees_a_service_workers_requests_and_ends_its_window_at_the_first(
    phones: Phones,
) -> None:
    phone = await phones.new()
    assert phone.context is not None
    log = RequestLog(phone.context)

    async def serve_worker(route: Route) -> None:
        await route.fulfill(body=PROBE_WORKER, content_type="text/javascript")

    await phone.context.route("**/probe-worker.js", serve_worker)
    window = asyncio.create_task(log.quiet_for(4 * TIMEOUT))  # must end well before: a request comes
    from_worker = phone.context.expect_event(
        "request", lambda r: r.url.endswith("/?from=worker") and r.service_worker is not None
    )
    async with from_worker as worker_request:
        await asyncio.wait_for(
            phone.dashboard.page.evaluate("() => navigator.serviceWorker.register('/probe-worker.js').then(() => {})"),
            TIMEOUT,
        )
    seen = await asyncio.wait_for(window, TIMEOUT)
    assert seen, "the window ended without a request"
    assert await worker_request.value in log.requests
    assert "service worker GET /?from=worker" in log.described(phone.site.base_url)
    log.stop()
