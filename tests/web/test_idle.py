"""An idle signed-in dashboard makes no HTTP requests for 30 s, measured without waiting 30 s.

The page runs on Playwright's fake clock, installed before it loads: `clock.run_for` fires
every timer due in the next 30 s of page time (polling, a refetch, a watchdog's reconnect)
at once. The log (`tests.web.phones.RequestLog`) covers the context's pages and service
workers. Requests arrive in order, so a user action afterwards (opening a conversation: its
thread's first page) is the barrier: whatever the timers asked for was logged before it
(opening a thread also marks it read, a request after the barrier).
The socket stays live meanwhile: 30 s is within its heartbeat watchdog (3 x 15 s). The clock
does drive the page: with 20 minutes instead of 30 s, the log shows the token's silent refresh.
test_dashboard.py waits the 30 s in real time too (the server's pings, answered on the socket).
"""

from __future__ import annotations

from playwright.async_api import BrowserContext, expect

from tests.web.pages import Dashboards
from tests.web.phones import RequestLog

IDLE = "00:30"  # mm:ss of page time


async def fake_clock(context: BrowserContext) -> None:
    await context.clock.install()


async def test_an_idle_signed_in_page_makes_no_requests_for_30_seconds(dashboards: Dashboards) -> None:
    dashboard = await dashboards.new(setup=fake_clock)
    await dashboard.sign_in("medic1@demo.example")
    await expect(dashboard.items.first).to_be_visible()
    log = RequestLog(dashboard.page.context)

    log.clear()
    await dashboard.page.clock.run_for(IDLE)
    async with dashboard.page.expect_request(lambda r: "/messages?" in r.url) as thread_page:
        await dashboard.items.first.click()  # the barrier: a request that must be logged, last
    barrier = await thread_page.value

    assert barrier in log.requests, "the log missed the barrier's request"
    before = log.described(dashboard.base_url)[: log.requests.index(barrier)]
    assert before == [], "the idle page made requests"  # (opening also marks read: after the barrier)
    await expect(dashboard.connection).to_have_attribute("data-state", "live")
    log.stop()
