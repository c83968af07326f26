"""Phones for restart tests: Chromium on a persistent profile that outlives a close, and a request log.

- `Phone`: a 390x844 touch screen (`is_mobile`, which Chromium honours in a persistent context)
  on its own profile directory; `launch`, `close` and `restart` (the same profile, so
  IndexedDB, localStorage, the service worker and its caches survive). Each launch's page is a
  `Dashboard` (`tests.web.pages.watched`): its uncaught errors and CSP refusals are recorded.
  `tab()` opens another tab of the app; `sockets` records every realtime socket of any tab.
- `Phones`: the fixture's factory; closes every phone at the end.
- `RequestLog`: every HTTP request of a context, its pages' and its service workers' alike
  (Chromium reports a service worker's requests on the context, with `request.service_worker`
  set); `quiet_for(seconds)` waits for the first request and returns what came in that window.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, Page, Playwright, Request, ViewportSize, WebSocket, expect

from tests.web.pages import CHROMIUM_ARGS, TIMEOUT_MS, Dashboard, Site, chromium, watched

PHONE: ViewportSize = {"width": 390, "height": 844}
LAUNCH_TIMEOUT_MS = 60_000


@dataclass
class Phone:
    """One phone: a persistent Chromium profile, launched, closed and launched again."""

    driver: Playwright
    site: Site
    profile: Path
    context: BrowserContext | None = None
    launches: list[Dashboard] = field(default_factory=list)  # one page per launch, the latest last
    tabs: list[Dashboard] = field(default_factory=list)  # more tabs opened with `tab()`
    init_scripts: list[str] = field(default_factory=list)  # run in every page first (e.g. to remove an API)
    permissions: list[str] = field(default_factory=list)  # granted at each launch (a grant does not outlive one)
    sockets: list[tuple[Page, WebSocket]] = field(default_factory=list)  # every socket of any tab

    @property
    def dashboard(self) -> Dashboard:
        assert self.launches and self.context is not None, "the phone is not running"
        return self.launches[-1]

    async def launch(self) -> Dashboard:
        """Start Chromium on the profile and open the dashboard (not signed in: the profile decides)."""
        assert self.context is None, "the phone is already running"
        self.context = await self.driver.chromium.launch_persistent_context(
            str(self.profile),
            executable_path=str(chromium()),
            args=CHROMIUM_ARGS,
            viewport=PHONE,
            is_mobile=True,
            has_touch=True,
            permissions=self.permissions,
            timeout=LAUNCH_TIMEOUT_MS,
        )
        self.context.set_default_timeout(TIMEOUT_MS)
        for script in self.init_scripts:
            await self.context.add_init_script(script)
        page = self.context.pages[0] if self.context.pages else await self.context.new_page()
        dashboard = self._watched(page)
        self.launches.append(dashboard)
        await page.goto(self.site.base_url + "/")
        return dashboard

    def _watched(self, page: Page) -> Dashboard:
        page.on("websocket", lambda socket: self.sockets.append((page, socket)))
        return watched(page, self.site.base_url)

    async def tab(self) -> Dashboard:
        """Another tab of the app in this browser, signed in from the shared store."""
        assert self.context is not None, "the phone is not running"
        page = await self.context.new_page()
        dashboard = self._watched(page)
        self.tabs.append(dashboard)
        await page.goto(self.site.base_url + "/")
        await expect(page.locator("#app")).to_be_visible()
        return dashboard

    def open_sockets(self) -> list[WebSocket]:
        """The sockets still open, in tabs still open."""
        return [socket for page, socket in self.sockets if not socket.is_closed() and not page.is_closed()]

    async def close(self) -> None:
        """Quit Chromium; the profile stays on disk (Chromium flushes it on a clean close)."""
        if self.context is not None:
            context, self.context = self.context, None
            await asyncio.wait_for(context.close(), LAUNCH_TIMEOUT_MS / 1000)

    async def restart(self) -> Dashboard:
        await self.close()
        return await self.launch()


class Phones:
    def __init__(self, driver: Playwright, site: Site, directory: Path) -> None:
        self._driver = driver
        self._site = site
        self._directory = directory
        self.phones: list[Phone] = []

    async def new(self, *, init_scripts: tuple[str, ...] = (), permissions: tuple[str, ...] = ()) -> Phone:
        """A launched phone on a new, empty profile (with `permissions` granted, e.g. "notifications")."""
        profile = self._directory / f"phone-{len(self.phones) + 1}"
        profile.mkdir()
        phone = Phone(self._driver, self._site, profile, init_scripts=list(init_scripts), permissions=list(permissions))
        self.phones.append(phone)
        await phone.launch()
        return phone

    async def signed_in(self, email: str, password: str) -> Phone:
        phone = await self.new()
        await phone.dashboard.sign_in(email, password)
        return phone

    @property
    def opened(self) -> list[Dashboard]:
        return [dashboard for phone in self.phones for dashboard in [*phone.launches, *phone.tabs]]

    async def close(self) -> None:
        for phone in self.phones:
            await phone.close()


class RequestLog:
    """Every HTTP request of a context (pages and service workers) from now on.

    Playwright reports a WebSocket as a "websocket" event, never as a request: frames on an open
    socket are not logged, a reconnect's HTTP (a sync, a token refresh) is.
    """

    def __init__(self, context: BrowserContext) -> None:
        self.requests: list[Request] = []
        self._first = asyncio.Event()
        self._context = context
        context.on("request", self._record)

    def _record(self, request: Request) -> None:
        self.requests.append(request)
        self._first.set()

    def clear(self) -> None:
        self.requests.clear()
        self._first.clear()

    def stop(self) -> None:
        self._context.remove_listener("request", self._record)

    def described(self, base_url: str = "") -> list[str]:
        return [
            f"{'service worker ' if r.service_worker else ''}{r.method} {r.url.removeprefix(base_url)}"
            for r in self.requests
        ]

    def quiet_for(self, seconds: float) -> Coroutine[Any, Any, list[Request]]:
        """Clear the log now; the coroutine waits up to `seconds` for a request and returns the
        requests seen (none when it stayed quiet). It ends early, at the first request: the bounded
        wait is the subject of an idle test, not a pause.
        """
        self.clear()
        return self._first_within(seconds)

    async def _first_within(self, seconds: float) -> list[Request]:
        with contextlib.suppress(TimeoutError):  # quiet all along: the outcome hoped for
            await asyncio.wait_for(self._first.wait(), seconds)
        return list(self.requests)
