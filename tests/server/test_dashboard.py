"""The dashboard's routes build no redirect from the request's Host header."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from sitecomms.server.app import create_app
from tests.support import fast_settings


@pytest.fixture(scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(fast_settings(f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'sitecomms.db'}"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://attacker.example") as made:
            yield made


@pytest.mark.parametrize("path", ["/static", "/static/", "/healthz/", "/v1/conversations/"])
async def test_no_redirect_is_built_from_the_host_header(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, headers={"Host": "attacker.example"})
    assert response.status_code == 404
    assert "location" not in response.headers


async def test_the_page_and_its_files_are_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/")).status_code == 200
    assert (await client.get("/static/app.js")).status_code == 200
