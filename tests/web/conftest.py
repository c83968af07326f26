"""Fixtures for the dashboard tests: one real server with the demo org, one Chromium, pages per test.

- `site`: `sitecomms serve` on SQLite with the demo organisation, for the whole module.
- `browser`: Debian's Chromium, launched once per session through Playwright (Playwright's own
  browser download is not used).
- `dashboards`: pages in fresh browser contexts, closed at the end of the test; the test fails
  if a page threw or the Content Security Policy refused something.
- `phones`: Chromium on persistent profiles that survive a restart (`tests.web.phones.Phones`),
  closed at the end of the test; the test fails if a page threw or the CSP refused something.
- `api`: the HTTP API (`tests.web.pages.Api`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Playwright, async_playwright

from tests.servers import base_env, run_cli, start
from tests.web.pages import CHROMIUM_ARGS, Api, Dashboards, Site, assert_clean, chromium
from tests.web.phones import Phones


@asynccontextmanager
async def demo_site(directory: Path, **settings: str) -> AsyncIterator[Site]:
    """`sitecomms serve` on a fresh SQLite file in `directory` with the demo organisation."""
    env = base_env(f"sqlite:///{directory / 'sitecomms.db'}", **settings)
    demo = await asyncio.to_thread(run_cli, ["demo"], env)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    served = await asyncio.wait_for(asyncio.to_thread(start, env, directory / "server-1.log"), 120)
    site = Site(env, directory, served)
    try:
        yield site
    finally:
        await site.stop()


@pytest.fixture(scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    async with demo_site(tmp_path_factory.mktemp("web")) as served:
        yield served


@pytest.fixture(scope="session")
async def playwright_driver() -> AsyncIterator[Playwright]:
    async with async_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
async def browser(playwright_driver: Playwright) -> AsyncIterator[Browser]:
    executable = str(chromium())  # the run must fail, never skip
    launched = await playwright_driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=60_000)
    try:
        yield launched
    finally:
        await launched.close()


@pytest.fixture
async def dashboards(browser: Browser, site: Site) -> AsyncIterator[Dashboards]:
    opened = Dashboards(browser, site)
    try:
        yield opened
    finally:
        await opened.close()
    assert_clean(opened.opened)


@pytest.fixture
async def phones(playwright_driver: Playwright, site: Site, tmp_path: Path) -> AsyncIterator[Phones]:
    made = Phones(playwright_driver, site, tmp_path)
    try:
        yield made
    finally:
        await made.close()
    assert_clean(made.opened)


@pytest.fixture
async def api(site: Site) -> AsyncIterator[Api]:
    client = Api(site.base_url)
    try:
        yield client
    finally:
        await client.close()
