"""Helpers for the dashboard tests: the server under test, its HTTP API, and dashboard pages.

- `Site`: `sitecomms serve` on SQLite with the demo organisation; it can be stopped and started
  again on the same port and database (`stop`, `start_again`), so a page's socket really drops
  and comes back.
- `Api`: the HTTP API, for setting up data and for checking what the server holds.
- `Dashboards`: opens pages in fresh browser contexts (one signed-in user each) and closes them;
  each `Dashboard` records uncaught page errors and Content Security Policy refusals (`watched`).
- Debian's Chromium (`chromium`, `CHROMIUM_ARGS`), for the `browser` fixture and for phones.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Locator, Page, ViewportSize, expect

from tests.servers import STOP_TIMEOUT, Served, start

DEMO_PASSWORD = "demo-password"
TIMEOUT_MS = 10_000  # every Playwright action, wait and expect()
TIMEOUT = TIMEOUT_MS / 1000
DESKTOP: ViewportSize = {"width": 1280, "height": 800}

expect.set_options(timeout=TIMEOUT_MS)

STORED_SESSION = """() => new Promise((resolve, reject) => {
  const open = indexedDB.open("sitecomms");
  open.onerror = () => reject(open.error);
  open.onsuccess = () => {
    const db = open.result;
    if (!db.objectStoreNames.contains("kv")) { db.close(); resolve(null); return; }
    const get = db.transaction("kv").objectStore("kv").get("session");
    get.onsuccess = () => { db.close(); resolve(get.result ?? null); };
    get.onerror = () => reject(get.error);
  };
})"""
CACHED_URLS = """async () => { const urls = [];
  for (const name of await caches.keys()) {
    for (const request of await (await caches.open(name)).keys()) urls.push(request.url);
  }
  return urls; }"""

# Debian's Chromium (Playwright's own browser download is not used), and how it is started.
CHROMIUM_CANDIDATES = (Path("/usr/lib/chromium/chromium"), Path("/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> Path:
    """Debian's Chromium; fails the test (never skips) when it is not installed."""
    executable = next((path for path in CHROMIUM_CANDIDATES if path.exists()), None)
    if executable is None:
        pytest.fail(f"Chromium is required for the dashboard tests; looked for {CHROMIUM_CANDIDATES}")
    return executable


# ---- the server ------------------------------------------------------------------------------


@dataclass
class Site:
    """The server under test; `stop` then `start_again` brings it back on the same port and database."""

    env: dict[str, str]
    directory: Path
    served: Served
    starts: int = 1

    @property
    def base_url(self) -> str:
        return self.served.base_url

    async def stop(self) -> None:
        await asyncio.wait_for(asyncio.to_thread(self.served.stop), 2 * STOP_TIMEOUT + 5)

    async def start_again(self) -> None:
        """Start a new process on the port the stopped one used (pages reconnect to it)."""
        assert self.served.process.poll() is not None, "stop the running server first"
        self.starts += 1
        log = self.directory / f"server-{self.starts}.log"
        self.served = await asyncio.wait_for(asyncio.to_thread(start, self.env, log, port=self.served.port), 120)


# ---- the HTTP API ----------------------------------------------------------------------------


@dataclass
class Account:
    user: dict[str, Any]
    token: str

    @property
    def id(self) -> str:
        return str(self.user["id"])

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


@dataclass
class Medic:
    account: Account
    email: str
    password: str
    conversation_id: str  # their direct conversation with the admins


class Api:
    """Typed-enough calls to the server (to set up data and to check what it holds)."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT)

    async def login(self, email: str, password: str = DEMO_PASSWORD) -> Account:
        response = await self.http.post("/v1/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        body = response.json()
        return Account(body["user"], body["access_token"])

    async def conversations(self, who: Account) -> list[dict[str, Any]]:
        response = await self.http.get("/v1/conversations", headers=who.headers)
        assert response.status_code == 200, response.text
        return list(response.json()["conversations"])

    async def conversation(self, who: Account, conversation_id: str) -> dict[str, Any]:
        return next(c for c in await self.conversations(who) if c["id"] == conversation_id)

    async def conversation_named(self, who: Account, name: str) -> dict[str, Any]:
        return next(c for c in await self.conversations(who) if c["name"] == name)

    async def broadcast(self, who: Account) -> dict[str, Any]:
        return next(c for c in await self.conversations(who) if c["type"] == "broadcast")

    async def send(self, who: Account, conversation_id: str, content: str) -> dict[str, Any]:
        body = {"conversation_id": conversation_id, "content": content, "idempotency_key": str(uuid.uuid4())}
        response = await self.http.post("/v1/messages", json=body, headers=who.headers)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def send_many(self, who: Account, conversation_id: str, contents: list[str]) -> None:
        for content in contents:  # one at a time: the order is the thread's order
            await self.send(who, conversation_id, content)

    async def mark_read(self, who: Account, conversation_id: str) -> None:
        response = await self.http.post(f"/v1/conversations/{conversation_id}/read", headers=who.headers)
        assert response.status_code == 200, response.text

    async def thread(self, who: Account, conversation_id: str) -> list[dict[str, Any]]:
        """Every message of a conversation, oldest first (all pages)."""
        pages: list[list[dict[str, Any]]] = []
        before: str | None = None
        while True:
            params = {"limit": "200"} | ({"before": before} if before else {})
            response = await self.http.get(
                f"/v1/conversations/{conversation_id}/messages", params=params, headers=who.headers
            )
            assert response.status_code == 200, response.text
            page = response.json()
            pages.insert(0, page["messages"])
            if not page["has_more"]:
                return [m for chunk in pages for m in chunk]
            before = page["next_before"]

    async def create_medic(self, admin: Account, display_name: str) -> Medic:
        email = f"medic-{uuid.uuid4().hex[:10]}@web.example"
        password = "web-test-password"
        body = {"email": email, "display_name": display_name, "role": "medic", "password": password}
        response = await self.http.post("/v1/users", json=body, headers=admin.headers)
        assert response.status_code == 201, response.text
        account = await self.login(email, password)
        direct = next(c for c in await self.conversations(account) if c["type"] == "direct")
        return Medic(account, email, password, direct["id"])

    async def close(self) -> None:
        await self.http.aclose()


# ---- the browser -----------------------------------------------------------------------------


@dataclass
class Dashboard:
    """One page of the dashboard in its own browser context."""

    page: Page
    base_url: str
    page_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)

    async def goto(self) -> None:
        await self.page.goto(self.base_url + "/")
        await expect(self.page.locator("#login-email")).to_be_visible()

    async def sign_in(self, email: str, password: str = DEMO_PASSWORD) -> None:
        """Sign in through the form and wait until the realtime socket is live."""
        await self.page.fill("#login-email", email)
        await self.page.fill("#login-password", password)
        await self.page.click("#login-form button[type=submit]")
        await expect(self.connection).to_have_attribute("data-state", "live")

    @property
    def connection(self) -> Locator:
        return self.page.locator("#connection")

    @property
    def unread_total(self) -> Locator:
        return self.page.locator("#unread-total")

    @property
    def items(self) -> Locator:
        return self.page.locator("#conversations li")

    def item(self, conversation_id: str) -> Locator:
        return self.page.locator(f'#conversations li[data-id="{conversation_id}"]')

    def badge(self, conversation_id: str) -> Locator:
        return self.item(conversation_id).locator(".badge.unread")

    @property
    def messages(self) -> Locator:
        return self.page.locator("#messages li.message")

    def message(self, text: str) -> Locator:
        """The thread's message(s) whose body contains `text`."""
        return self.messages.filter(has=self.page.locator(".body", has_text=text))

    async def choose(self, item: str) -> None:
        """Open the header's menu and click one of its items (e.g. "#sign-out")."""
        if await self.page.locator("#menu").is_hidden():
            await self.page.click("#menu-button")
        await self.page.click(item)

    async def open(self, conversation_id: str, title: str | None = None) -> None:
        """Open a conversation from the list; returns once it is shown and marked read here."""
        await self.item(conversation_id).click()
        if title is not None:
            await expect(self.page.locator("#thread-title")).to_have_text(title)
        await expect(self.badge(conversation_id)).to_be_hidden()

    async def sign_out(self) -> None:
        await self.choose("#sign-out")

    async def databases(self) -> list[str]:
        """The names of this origin's IndexedDB databases."""
        names = await self.page.evaluate("async () => (await indexedDB.databases()).map((d) => d.name).sort()")
        return list(names)

    async def stored_session(self) -> dict[str, Any] | None:
        """The session the app keeps in IndexedDB ("sitecomms", store "kv", key "session")."""
        value = await self.page.evaluate(STORED_SESSION)
        return dict(value) if value else None

    async def cached_urls(self) -> list[str]:
        """Every URL held in this origin's Cache Storage."""
        return list(await self.page.evaluate(CACHED_URLS))

    async def total(self) -> int:
        return int(await self.unread_total.inner_text())

    async def badge_count(self, conversation_id: str) -> int:
        badge = self.badge(conversation_id)
        return 0 if await badge.is_hidden() else int(await badge.inner_text())

    async def send(self, text: str) -> None:
        """Type into the compose box and press Enter (the message is not awaited)."""
        compose = self.page.locator("#compose-text")
        await compose.fill(text)
        await compose.press("Enter")

    async def scroll_state(self) -> dict[str, float]:
        return dict(
            await self.page.evaluate(
                "() => { const b = document.getElementById('messages');"
                " return {top: b.scrollTop, height: b.scrollHeight, client: b.clientHeight}; }"
            )
        )

    async def wait_at_bottom(self) -> None:
        await self.page.wait_for_function(
            "() => { const b = document.getElementById('messages');"
            " return b.scrollHeight - b.scrollTop - b.clientHeight < 24; }",
            timeout=TIMEOUT_MS,
        )


def watched(page: Page, base_url: str) -> Dashboard:
    """A `Dashboard` for `page` that records its uncaught errors and Content Security Policy refusals."""
    dashboard = Dashboard(page, base_url)
    page.on("pageerror", lambda error: dashboard.page_errors.append(str(error)))
    page.on("console", dashboard._console)
    return dashboard


def assert_clean(opened: list[Dashboard]) -> None:
    """Fails if any of these pages threw or had something refused by the Content Security Policy."""
    for dashboard in opened:
        assert not dashboard.page_errors, f"the page threw: {dashboard.page_errors}"
        assert not dashboard.csp_violations, f"the CSP refused something: {dashboard.csp_violations}"


class Dashboards:
    def __init__(self, browser: Browser, site: Site) -> None:
        self._browser = browser
        self._site = site
        self._contexts: list[BrowserContext] = []
        self.opened: list[Dashboard] = []

    async def new(
        self,
        *,
        viewport: ViewportSize | None = None,
        mobile: bool = False,
        setup: Callable[[BrowserContext], Awaitable[None]] | None = None,
    ) -> Dashboard:
        """A page at the login form, in a fresh context (its own session storage); `setup` runs on
        that context before the page opens (to install Playwright's fake clock, say)."""
        context = await self._browser.new_context(
            viewport=viewport or DESKTOP,
            is_mobile=mobile,
            has_touch=mobile,
        )
        context.set_default_timeout(TIMEOUT_MS)
        self._contexts.append(context)
        if setup is not None:
            await setup(context)
        dashboard = watched(await context.new_page(), self._site.base_url)
        self.opened.append(dashboard)
        await dashboard.goto()
        return dashboard

    async def signed_in(self, email: str, password: str = DEMO_PASSWORD, **options: Any) -> Dashboard:
        dashboard = await self.new(**options)
        await dashboard.sign_in(email, password)
        return dashboard

    async def close(self) -> None:
        for context in self._contexts:
            await context.close()
