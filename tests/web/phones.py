"""Phones for the offline tests: Chromium on a persistent profile, at phone width, with touch.

A `Phone` keeps its profile directory across `close()` and `launch()`, so IndexedDB, the
service worker and its caches survive a "browser restart" as they do on a device. Its page is
a `Dashboard` (tests.web.pages), so the same helpers work on it; it records page errors and
Content Security Policy refusals of every launch, which the `phones` fixture asserts empty.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, Locator, Page, Playwright, ViewportSize, WebSocket, expect

from tests.web.pages import DEMO_PASSWORD, TIMEOUT_MS, Dashboard

PHONE: ViewportSize = {"width": 390, "height": 844}


class Phone:
    def __init__(self, playwright: Playwright, executable: Path, args: list[str], profile: Path, base_url: str) -> None:
        self._playwright = playwright
        self._executable = executable
        self._args = args
        self.profile = profile
        self.base_url = base_url
        self.context: BrowserContext | None = None  # type: ignore[assignment]
        self.dashboard: Dashboard | None = None
        self.page_errors: list[str] = []
        self.csp_violations: list[str] = []
        self.sockets: list[tuple[Page, WebSocket]] = []  # every realtime socket any tab of this phone opened
        self.init_scripts: list[str] = []  # run in every page before the app (e.g. to remove an API)

    @property
    def page(self) -> Page:
        assert self.dashboard is not None, "launch the phone first"
        return self.dashboard.page

    async def launch(self, *, signed_in: bool = True) -> None:
        """Start the browser on the profile and open the app (signed in from the store, if `signed_in`)."""
        self.context = await self._playwright.chromium.launch_persistent_context(
            str(self.profile),
            executable_path=str(self._executable),
            args=self._args,
            viewport=PHONE,
            has_touch=True,
            timeout=60_000,
        )
        self.context.set_default_timeout(TIMEOUT_MS)
        for script in self.init_scripts:
            await self.context.add_init_script(script)
        self.context.on("page", self._watch)
        page = self.context.pages[0] if self.context.pages else await self.context.new_page()
        if not self.context.pages or page is self.context.pages[0]:
            self._watch(page)
        self.dashboard = Dashboard(page, self.base_url)
        await page.goto(self.base_url + "/")
        if signed_in:
            await expect(page.locator("#app")).to_be_visible()
        else:
            await page.wait_for_load_state("load")

    def _watch(self, page: Page) -> None:
        if getattr(page, "_phone_watched", False):
            return
        setattr(page, "_phone_watched", True)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("console", self._console)
        page.on("websocket", lambda socket: self.sockets.append((page, socket)))

    async def tab(self) -> Dashboard:
        """Another tab of the app in this browser (signed in from the shared store)."""
        assert self.context is not None
        page = await self.context.new_page()
        self._watch(page)
        await page.goto(self.base_url + "/")
        await expect(page.locator("#app")).to_be_visible()
        return Dashboard(page, self.base_url)

    def open_sockets(self) -> list[WebSocket]:
        """The sockets still open, in tabs still open."""
        return [socket for page, socket in self.sockets if not socket.is_closed() and not page.is_closed()]

    def _console(self, message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)

    async def close(self) -> None:
        if self.context is not None:
            await self.context.close()
        self.context = None

    async def sign_in(self, email: str, password: str = DEMO_PASSWORD) -> None:
        assert self.dashboard is not None
        await self.dashboard.sign_in(email, password)

    async def sign_out(self) -> None:
        await self.page.locator("#sign-out").click()

    @property
    def connection(self) -> Locator:
        return self.page.locator("#connection")

    def message(self, text: str) -> Locator:
        assert self.dashboard is not None
        return self.dashboard.message(text)

    async def open(self, conversation_id: str) -> None:
        assert self.dashboard is not None
        await self.dashboard.item(conversation_id).click()
        await expect(self.page.locator("#messages")).to_be_visible()

    async def databases(self) -> list[str]:
        """The names of this origin's IndexedDB databases."""
        names = await self.page.evaluate("async () => (await indexedDB.databases()).map((d) => d.name).sort()")
        return list(names)

    async def stored_session(self) -> dict[str, Any] | None:
        """The session record the app keeps in IndexedDB ("sitecomms" / "kv" / "session")."""
        value = await self.page.evaluate(
            """() => new Promise((resolve, reject) => {
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
        )
        return dict(value) if value else None

    async def cached_urls(self, keep: Callable[[str], bool] = lambda url: True) -> list[str]:
        """Every URL held in this origin's Cache Storage, filtered by `keep`."""
        urls = await self.page.evaluate(
            """async () => { const urls = [];
                 for (const name of await caches.keys()) {
                   for (const request of await (await caches.open(name)).keys()) urls.push(request.url);
                 }
                 return urls; }"""
        )
        return [url for url in urls if keep(url)]


class Phones:
    """Phones of one test, each on its own profile under the test's temporary directory."""

    def __init__(self, playwright: Playwright, executable: Path, args: list[str], root: Path, base_url: str) -> None:
        self._playwright = playwright
        self._executable = executable
        self._args = args
        self._root = root
        self._base_url = base_url
        self.opened: list[Phone] = []

    def new(self) -> Phone:
        phone = Phone(self._playwright, self._executable, self._args, self._root / f"phone-{len(self.opened)}", self._base_url)
        self.opened.append(phone)
        return phone

    async def signed_in(self, email: str, password: str = DEMO_PASSWORD) -> Phone:
        phone = self.new()
        await phone.launch(signed_in=False)
        await phone.sign_in(email, password)
        return phone

    async def close(self) -> None:
        for phone in self.opened:
            await phone.close()
