"""`/docs` in a real browser: the vendored Swagger UI passes its integrity check and its policy, and shows the API."""

from __future__ import annotations

from playwright.async_api import Browser, ConsoleMessage, expect

from tests.web.pages import TIMEOUT_MS, Site


async def test_the_docs_page_renders_the_api_under_its_policy(browser: Browser, site: Site) -> None:
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    requested: list[str] = []
    try:
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(f"threw: {error}"))

        def console(message: ConsoleMessage) -> None:
            if message.type == "error":  # a refused integrity or policy shows here
                errors.append(message.text)

        page.on("console", console)
        page.on("request", lambda request: requested.append(request.url))
        await page.goto(site.base_url + "/docs")
        await expect(page.locator(".swagger-ui .info .title")).to_contain_text("SiteComms")
        await expect(page.locator(".opblock-summary-path", has_text="/v1/messages").first).to_be_visible()
    finally:
        await context.close()
    assert not errors, errors
    assert requested and all(url.startswith((site.base_url + "/", "data:")) for url in requested), requested
