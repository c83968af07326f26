"""The installable app shell in Chromium: the manifest, opening with no network, updating.

Each test runs its own server (`shell_site`) on its own copy of the web directory
(`SITECOMMS_WEB_DIR`), so it may stop the server (the robust way to be offline: Playwright's
offline switch does not reach a service worker's fetches in every version) or change a shell
file, without disturbing the module-wide `site` of the other dashboard tests.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from sitecomms.server.dashboard import WEB, read_shell
from tests.servers import base_env, start
from tests.web.pages import CHROMIUM_ARGS, TIMEOUT, TIMEOUT_MS, Dashboard, Dashboards, Site, chromium

SHELL_CACHE_PREFIX = "sitecomms-shell-"
OUTBOX_TAG = "sitecomms-outbox"  # shell.js OUTBOX_SYNC_TAG
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class ShellSite:
    site: Site
    web: Path  # the server's web directory (a copy: tests may change it)


@pytest.fixture
async def shell_site(tmp_path: Path) -> AsyncIterator[ShellSite]:
    web = tmp_path / "web"
    shutil.copytree(WEB, web)
    env = base_env(f"sqlite:///{tmp_path / 'sitecomms.db'}", SITECOMMS_WEB_DIR=str(web))
    served = await asyncio.wait_for(asyncio.to_thread(start, env, tmp_path / "server-1.log"), 120)
    site = Site(env, tmp_path, served)
    try:
        yield ShellSite(site, web)
    finally:
        if site.served.process.poll() is None:
            await site.stop()


@pytest.fixture
async def shell_pages(browser: Browser, shell_site: ShellSite) -> AsyncIterator[Dashboards]:
    opened = Dashboards(browser, shell_site.site)
    try:
        yield opened
    finally:
        await opened.close()
    for dashboard in opened.opened:
        assert not dashboard.page_errors, f"the page threw: {dashboard.page_errors}"
        assert not dashboard.csp_violations, f"the CSP refused something: {dashboard.csp_violations}"


async def _active_worker(page: Page) -> None:
    """Until this origin's worker is installed (the shell cached) and activated."""
    activated = (
        "async () => { const worker = (await navigator.serviceWorker.ready).active;"
        " if (worker.state !== 'activated') await new Promise((done) => worker.addEventListener("
        "'statechange', () => worker.state === 'activated' && done())); }"
    )
    await asyncio.wait_for(page.evaluate(activated), TIMEOUT)


async def _wait_for_caches(page: Page, names: list[str]) -> None:
    """Until this origin's cache names are exactly `names` (wait_for_function polls a sync check)."""
    await page.wait_for_function(
        "(names) => { caches.keys().then((found) => { window.cacheNamesSeen = found.sort().join(); });"
        " return window.cacheNamesSeen === names; }",
        arg=",".join(sorted(names)),
        timeout=TIMEOUT_MS,
    )


async def _controlled(dashboard: Dashboard) -> None:
    """Load the page again, now through the worker; the response must come from it."""
    await _active_worker(dashboard.page)
    response = await dashboard.page.reload()
    assert response is not None and response.from_service_worker
    await expect(dashboard.page.locator("#login-email")).to_be_visible()
    assert await dashboard.page.evaluate("() => navigator.serviceWorker.controller !== null")


async def _cache_names(page: Page) -> list[str]:
    return list(await page.evaluate("async () => (await caches.keys()).sort()"))


async def _fetch(page: Page, url: str) -> str:
    """What `fetch(url)` from the page gives: 'resolved <status> <body>' or 'rejected <error name>'."""
    return str(
        await page.evaluate(
            "async (url) => { try { const r = await fetch(url);"
            " return `resolved ${r.status} ${await r.text()}`; } catch (e) { return `rejected ${e.name}`; } }",
            url,
        )
    )


def _png_size(content: bytes) -> tuple[int, int]:
    assert content[:8] == PNG_SIGNATURE
    assert content[12:16] == b"IHDR"
    width, height = struct.unpack(">II", content[16:24])
    return int(width), int(height)


async def test_the_manifest_is_installable_shaped_and_its_icons_have_their_sizes(
    shell_site: ShellSite, shell_pages: Dashboards
) -> None:
    dashboard = await shell_pages.new()
    page = dashboard.page
    link = await page.evaluate("() => document.querySelector('link[rel=manifest]').href")
    assert link == shell_site.site.base_url + "/manifest.webmanifest"
    theme = await page.evaluate("() => document.querySelector('meta[name=theme-color]').content")
    async with httpx.AsyncClient(base_url=shell_site.site.base_url, timeout=TIMEOUT) as http:
        response = await http.get("/manifest.webmanifest")
        assert response.headers["content-type"] == "application/manifest+json"
        manifest: dict[str, Any] = response.json()
        assert manifest["name"] == "SiteComms" and manifest["short_name"]
        assert manifest["description"]
        assert (manifest["id"], manifest["start_url"], manifest["scope"]) == ("/", "/", "/")
        assert manifest["display"] == "standalone"
        assert manifest["theme_color"] == theme == "#1f6feb"  # app.css --accent
        assert manifest["background_color"] == "#f4f6f8"  # app.css --bg
        kinds = {(icon["purpose"], icon["sizes"]) for icon in manifest["icons"]}
        assert kinds == {("any", "192x192"), ("any", "512x512"), ("maskable", "192x192"), ("maskable", "512x512")}
        for icon in manifest["icons"]:
            fetched = await http.get(icon["src"])
            assert fetched.status_code == 200 and fetched.headers["content-type"] == icon["type"] == "image/png"
            side = int(icon["sizes"].split("x")[0])
            assert _png_size(fetched.content) == (side, side), icon["src"]
        touch = await page.evaluate("() => document.querySelector('link[rel=apple-touch-icon]').href")
        assert _png_size((await http.get(touch)).content) == (192, 192)
    # Chromium itself reads the manifest the page links to, without complaint.
    cdp = await page.context.new_cdp_session(page)
    parsed = await cdp.send("Page.getAppManifest")
    assert parsed["url"] == link and parsed["errors"] == [], parsed["errors"]


async def test_chromium_finds_nothing_that_stops_installing_the_app(
    browser: Browser, shell_site: ShellSite, tmp_path: Path
) -> None:
    """In a real profile (the tests' usual contexts are incognito, where nothing installs)."""
    context = await browser.browser_type.launch_persistent_context(
        tmp_path / "profile", executable_path=str(chromium()), args=CHROMIUM_ARGS, timeout=60_000
    )
    try:
        context.set_default_timeout(TIMEOUT_MS)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(shell_site.site.base_url + "/")
        await expect(page.locator("#login-email")).to_be_visible()
        await _active_worker(page)
        cdp = await context.new_cdp_session(page)
        installability = await cdp.send("Page.getInstallabilityErrors")
        assert installability["installabilityErrors"] == [], installability
        assert not errors
    finally:
        await context.close()


async def test_after_one_visit_the_app_opens_with_the_server_gone_and_the_api_is_never_cached(
    shell_site: ShellSite, shell_pages: Dashboards
) -> None:
    dashboard = await shell_pages.new()
    page = dashboard.page
    await _controlled(dashboard)
    async with page.expect_response("**/v1/me") as answered:
        assert (await _fetch(page, "/v1/me")).startswith("resolved 401 ")
    assert not (await answered.value).from_service_worker  # the API went to the network

    await shell_site.site.stop()
    response = await page.reload()
    assert response is not None and response.from_service_worker
    await expect(page.locator("#login-email")).to_be_visible()
    await expect(page.locator("#login-form button[type=submit]")).to_be_visible()
    assert (await _fetch(page, "/v1/me")) == "rejected TypeError"  # not from the cache
    assert (await _fetch(page, "/static/docs.js")) == "rejected TypeError"  # not a shell file
    assert (await _fetch(page, "/static/app.css")).startswith("resolved 200 ")

    another = await page.context.new_page()  # a new navigation, in a new tab, still offline
    another.on("pageerror", lambda error: dashboard.page_errors.append(str(error)))
    response = await another.goto(shell_site.site.base_url + "/")
    assert response is not None and response.from_service_worker
    await expect(another.locator("#login-email")).to_be_visible()
    assert (await _fetch(another, "/v1/sync")) == "rejected TypeError"

    await shell_site.site.start_again()  # and online again, the API answers from the server
    assert (await _fetch(another, "/v1/me")).startswith("resolved 401 ")


async def test_a_new_version_waits_until_the_user_updates_then_the_page_runs_only_it(
    shell_site: ShellSite, shell_pages: Dashboards
) -> None:
    dashboard = await shell_pages.new()
    page = dashboard.page
    await _controlled(dashboard)
    other_tab = await page.context.new_page()  # the app open twice: both must move to v2 together
    other_tab.on("pageerror", lambda error: dashboard.page_errors.append(str(error)))
    await other_tab.goto(dashboard.base_url + "/")
    await expect(other_tab.locator("#login-email")).to_be_visible()
    assert await other_tab.evaluate("() => navigator.serviceWorker.controller !== null")
    first = read_shell(shell_site.web).version
    assert await _cache_names(page) == [SHELL_CACHE_PREFIX + first]
    stylesheet = shell_site.web / "static" / "app.css"
    old_css = stylesheet.read_text()
    marker = "--shell-test-version"
    stylesheet.write_text(old_css + f":root {{ {marker}: v2; }}\n")
    second = read_shell(shell_site.web).version
    assert second != first
    await shell_site.site.stop()  # the version is computed at start-up
    await shell_site.site.start_again()

    await page.evaluate("async () => { await (await navigator.serviceWorker.getRegistration()).update(); }")
    banner = page.locator("#shell-update")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("A new version is ready")
    # Until the user chooses, the page runs v1 only: the old worker still serves v1's files.
    await _wait_for_caches(page, [SHELL_CACHE_PREFIX + first, SHELL_CACHE_PREFIX + second])
    assert await _fetch(page, "/static/app.css") == f"resolved 200 {old_css}"
    assert await page.evaluate(f"() => getComputedStyle(document.documentElement).getPropertyValue('{marker}')") == ""
    assert await page.evaluate("async () => (await navigator.serviceWorker.getRegistration()).waiting !== null")
    await expect(other_tab.locator("#shell-update")).to_be_visible()  # offered there too

    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    async with page.expect_navigation(), other_tab.expect_navigation():  # the other tab follows
        await banner.get_by_role("button", name="Update").click()
    runs_v2 = f"() => getComputedStyle(document.documentElement).getPropertyValue('{marker}').trim() === 'v2'"
    for tab in (page, other_tab):
        await expect(tab.locator("#login-email")).to_be_visible()
        await tab.wait_for_function(runs_v2, timeout=TIMEOUT_MS)
        await expect(tab.locator("#shell-update")).to_have_count(0)
    assert (await _fetch(page, "/static/app.css")) == f"resolved 200 {stylesheet.read_text()}"
    await _wait_for_caches(page, [SHELL_CACHE_PREFIX + second])
    await expect(banner).to_have_count(0)
    assert await page.evaluate("async () => (await navigator.serviceWorker.getRegistration()).waiting === null")
    assert navigations == [shell_site.site.base_url + "/"], navigations  # reloaded once


async def test_a_shell_file_changed_under_a_running_server_never_enters_the_cache(
    shell_site: ShellSite, shell_pages: Dashboards
) -> None:
    """The worker checks each file against the hash the server computed: no mixed versions, no half cache."""
    stylesheet = shell_site.web / "static" / "app.css"
    stylesheet.write_text(stylesheet.read_text() + "/* changed after start-up */\n")
    dashboard = await shell_pages.new()  # the page itself works, from the network
    page = dashboard.page
    settled = (
        "async () => { const registration = await navigator.serviceWorker.register("
        "'/sw.js', {type: 'module', updateViaCache: 'none'});"
        " const worker = registration.installing ?? registration.waiting ?? registration.active;"
        " const final = () => ['redundant', 'activated'].includes(worker.state);"
        " if (!final()) await new Promise((done) => worker.addEventListener('statechange', () => final() && done()));"
        " return worker.state; }"
    )
    assert await asyncio.wait_for(page.evaluate(settled), TIMEOUT) == "redundant"
    await _wait_for_caches(page, [])
    assert await page.evaluate("() => navigator.serviceWorker.controller") is None

    await shell_site.site.stop()  # restarted, the server hashes the files as they are now
    await shell_site.site.start_again()
    await page.reload()
    await _active_worker(page)
    await _wait_for_caches(page, [SHELL_CACHE_PREFIX + read_shell(shell_site.web).version])
