"""`/docs` is Swagger UI from the vendored, pinned copy: integrity-checked, no other origin, no inline script."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sitecomms.server.api.docs import MANIFEST, VENDOR
from sitecomms.server.app import create_app
from tests.support import fast_settings

MANIFEST_DATA = json.loads(MANIFEST.read_text())


@pytest.fixture(scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(fast_settings(f"sqlite:///{tmp_path_factory.mktemp('docs') / 'sitecomms.db'}"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sitecomms.test") as made:
            yield made


def _sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def test_the_manifest_pins_a_version_and_its_hashes_match_the_files() -> None:
    assert MANIFEST_DATA["package"] == "swagger-ui-dist"
    assert re.fullmatch(r"\d+\.\d+\.\d+", MANIFEST_DATA["version"])
    assert set(MANIFEST_DATA["files"]) == {"swagger-ui-bundle.js", "swagger-ui.css"}
    for name, integrity in MANIFEST_DATA["files"].items():
        assert _sri((VENDOR / name).read_bytes()) == integrity, name
    assert "Apache License" in (VENDOR / "LICENSE").read_text()


async def test_docs_loads_only_the_vendored_files_with_their_integrity(client: httpx.AsyncClient) -> None:
    page = (await client.get("/docs")).text
    assert "http:" not in page and "https:" not in page and "//" not in page.replace("://", "")
    references = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert references == [
        "data:,",
        "/static/vendor/swagger-ui/swagger-ui.css",
        "/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "/static/docs.js",
    ]
    for name, integrity in MANIFEST_DATA["files"].items():
        assert f'{name}" integrity="{integrity}"' in page, name
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert scripts and all('src="' in attributes and not body.strip() for attributes, body in scripts)


async def test_the_files_the_page_loads_are_served(client: httpx.AsyncClient) -> None:
    for path, kind in [
        ("/static/vendor/swagger-ui/swagger-ui-bundle.js", "javascript"),
        ("/static/vendor/swagger-ui/swagger-ui.css", "text/css"),
        ("/static/docs.js", "javascript"),
    ]:
        response = await client.get(path)
        assert response.status_code == 200 and kind in response.headers["content-type"], path
    bundle = await client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js")
    assert _sri(bundle.content) == MANIFEST_DATA["files"]["swagger-ui-bundle.js"]
    init = (await client.get("/static/docs.js")).text
    assert 'url: "/openapi.json"' in init


def test_the_vendored_files_are_package_data() -> None:
    pyproject = (Path(__file__).resolve().parents[3] / "pyproject.toml").read_text()
    assert '"web/**/*"' in pyproject  # sitecomms/web/static/vendor/... ships in the wheel
