"""Fixtures for the dashboard tests: one real server with the demo org, one Chromium, pages per test.

- `site`: `sitecomms serve` on SQLite with the demo organisation, for the whole module.
- `browser`: Debian's Chromium, launched once per session through Playwright (Playwright's own
  browser download is not used).
- `dashboards`: pages in fresh browser contexts, closed at the end of the test; the test fails
  if a page threw or the Content Security Policy refused something.
- `api`: the HTTP API (`tests.web.pages.Api`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Playwright, async_playwright

from tests.servers import base_env, run_cli, start
from tests.web.pages import Api, Dashboards, Site
from tests.web.phones import Phones

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


@pytest.fixture(scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    directory = tmp_path_factory.mktemp("web")
    env = base_env(f"sqlite:///{directory / 'sitecomms.db'}")
    demo = await asyncio.to_thread(run_cli, ["demo"], env)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    served = await asyncio.wait_for(asyncio.to_thread(start, env, directory / "server-1.log"), 120)
    site = Site(env, directory, served)
    try:
        yield site
    finally:
        await site.stop()


def chromium() -> Path:
    executable = next((path for path in CHROMIUM_CANDIDATES if path.exists()), None)
    if executable is None:  # the run must fail, never skip
        pytest.fail(f"Chromium is required for the dashboard tests; looked for {CHROMIUM_CANDIDATES}")
    return executable


@pytest.fixture(scope="session")
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as started:
        yield started


@pytest.fixture(scope="session")
async def browser(playwright: Playwright) -> AsyncIterator[Browser]:
    launched = await playwright.chromium.launch(executable_path=str(chromium()), args=CHROMIUM_ARGS, timeout=60_000)
    try:
        yield launched
    finally:
        await launched.close()


@pytest.fixture
async def phones(playwright: Playwright, site: Site, tmp_path: Path) -> AsyncIterator[Phones]:
    """Phones on persistent profiles (a restart keeps IndexedDB, the service worker, the caches)."""
    opened = Phones(playwright, chromium(), CHROMIUM_ARGS, tmp_path, site.base_url)
    try:
        yield opened
    finally:
        await opened.close()
    for phone in opened.opened:
        assert not phone.page_errors, f"the page threw: {phone.page_errors}"
        assert not phone.csp_violations, f"the CSP refused something: {phone.csp_violations}"


@pytest.fixture
async def dashboards(browser: Browser, site: Site) -> AsyncIterator[Dashboards]:
    opened = Dashboards(browser, site)
    try:
        yield opened
    finally:
        await opened.close()
    for dashboard in opened.opened:
        assert not dashboard.page_errors, f"the page threw: {dashboard.page_errors}"
        assert not dashboard.csp_violations, f"the CSP refused something: {dashboard.csp_violations}"


@pytest.fixture
async def api(site: Site) -> AsyncIterator[Api]:
    client = Api(site.base_url)
    try:
        yield client
    finally:
        await client.close()
