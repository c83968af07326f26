"""Every HTTP response carries the security headers, with the policy of what it is.

JSON answers and errors (4xx from a handler, 413 from the body limit, even an unhandled 500),
the schema, static files and the web manifest get the API's `default-src 'none'`; the dashboard,
the docs page and the service worker's script their own policies; `Strict-Transport-Security`
only when `hsts_seconds` says HTTPS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from sitecomms.server.api.security_headers import API_POLICY, DASHBOARD_POLICY, DOCS_POLICY, WORKER_POLICY
from sitecomms.server.app import create_app
from tests.support import fast_settings

COMMON = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "x-frame-options": "DENY"}


async def _boom(_request: Request) -> Response:
    raise RuntimeError("an unhandled failure")


async def _client(database: Path, **settings: object) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(fast_settings(f"sqlite:///{database}", **settings))
    app.add_route("/boom", _boom)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://sitecomms.test") as client:
            yield client


@pytest.fixture(scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    async for made in _client(tmp_path_factory.mktemp("headers") / "sitecomms.db"):
        yield made


def _assert_secured(response: httpx.Response, policy: str) -> None:
    for name, value in COMMON.items():
        assert response.headers.get_list(name) == [value], (name, response.headers)
    assert response.headers.get_list("content-security-policy") == [policy]
    assert "frame-ancestors 'none'" in policy
    assert "strict-transport-security" not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/v1/conversations", 401),
        ("GET", "/no/such/path", 404),
        ("POST", "/v1/auth/login", 422),
        ("GET", "/static/app.js", 200),
        ("GET", "/static/vendor/swagger-ui/swagger-ui.css", 200),
        ("GET", "/static/icons/icon-192.png", 200),
        ("GET", "/manifest.webmanifest", 200),
        ("GET", "/boom", 500),
    ],
)
async def test_api_answers_static_files_and_errors_get_the_api_policy(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await client.request(method, path, json={} if method == "POST" else None)
    assert response.status_code == status, response.text
    _assert_secured(response, API_POLICY)


async def test_api_answers_are_never_cached_and_static_files_may_be(client: httpx.AsyncClient) -> None:
    for response in (
        await client.post("/v1/auth/login", json={"email": "nobody@site.example", "password": "not-the-password"}),
        await client.post("/v1/auth/refresh", json={"refresh_token": "x.y"}),
        await client.get("/v1/conversations"),
    ):
        assert response.headers.get_list("cache-control") == ["no-store"], response.headers
    assert "cache-control" not in (await client.get("/static/app.js")).headers
    assert (await client.get("/")).headers.get_list("cache-control") == ["no-cache"]


async def test_a_body_over_the_limit_is_refused_with_the_headers(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/auth/login", content=b"x" * (2 << 20), headers={"content-type": "text/plain"})
    assert response.status_code == 413
    _assert_secured(response, API_POLICY)


async def test_the_dashboard_gets_its_own_policy_once(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    _assert_secured(response, DASHBOARD_POLICY)
    assert response.headers["cache-control"] == "no-cache"


async def test_the_dashboard_may_register_its_worker_and_read_its_manifest_from_this_origin_only() -> None:
    directives = dict(part.strip().split(" ", 1) for part in DASHBOARD_POLICY.split(";"))
    assert directives["worker-src"] == "'self'" and directives["manifest-src"] == "'self'"
    assert directives["default-src"] == "'none'" and "unsafe" not in DASHBOARD_POLICY


async def test_the_service_worker_script_gets_a_policy_that_lets_it_run_and_fetch_the_shell(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/sw.js")
    assert response.status_code == 200
    _assert_secured(response, WORKER_POLICY)
    directives = dict(part.strip().split(" ", 1) for part in WORKER_POLICY.split(";"))
    assert directives["script-src"] == "'self'" and directives["connect-src"] == "'self'"
    assert directives["img-src"] == "'self'"  # the notifications' icons
    assert directives["default-src"] == "'none'" and "unsafe" not in WORKER_POLICY
    assert response.headers.get_list("cache-control") == ["no-cache"]


async def test_the_docs_page_gets_a_policy_of_this_origin_only(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    _assert_secured(response, DOCS_POLICY)
    assert "script-src 'self';" in DOCS_POLICY and "unsafe" not in DOCS_POLICY


async def test_hsts_is_sent_only_when_configured(tmp_path: Path) -> None:
    async for secured in _client(tmp_path / "sitecomms.db", hsts_seconds=31_536_000):
        for path in ("/healthz", "/", "/docs", "/sw.js"):
            response = await secured.get(path)
            assert response.headers.get_list("strict-transport-security") == ["max-age=31536000"], path
