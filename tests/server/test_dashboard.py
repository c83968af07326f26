"""The dashboard's routes: no redirect built from the Host header; the app shell (/sw.js, manifest)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import shutil
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sitecomms.server.app import create_app
from sitecomms.server.dashboard import WEB, read_shell
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


# ---- the app shell: /sw.js and the manifest ----------------------------------------------------


def _build(worker_source: str) -> dict[str, Any]:
    """The BUILD object the server wrote into the served worker."""
    found = re.search(r"^const BUILD = (\{.*?^\});$", worker_source, re.S | re.M)
    assert found is not None, worker_source[:400]
    return dict(json.loads(found.group(1)))


async def test_the_service_worker_is_served_uncached_with_its_build(client: httpx.AsyncClient) -> None:
    response = await client.get("/sw.js")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers.get_list("cache-control") == ["no-cache"]
    assert "__SHELL_BUILD__" not in response.text
    build = _build(response.text)
    assert build["version"] == read_shell(WEB).version
    urls = list(build["files"])
    assert urls[0] == "/" and {"/static/app.js", "/static/app.css", "/static/shell.js"} <= set(urls)
    assert {"/static/icons/icon-192.png", "/static/icons/maskable-512.png"} <= set(urls)
    assert not [url for url in urls if "vendor" in url or url.endswith("docs.js")], urls
    for url, integrity in build["files"].items():  # each hash is the bytes the server serves
        served = (await client.get(url)).content
        assert integrity == "sha256-" + base64.b64encode(hashlib.sha256(served).digest()).decode(), url


async def test_the_manifest_is_served_as_a_manifest(client: httpx.AsyncClient) -> None:
    response = await client.get("/manifest.webmanifest")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/manifest+json"
    assert response.headers.get_list("cache-control") == ["no-cache"]
    manifest = response.json()
    assert (manifest["name"], manifest["start_url"], manifest["scope"], manifest["id"]) == ("SiteComms", "/", "/", "/")
    assert manifest["display"] == "standalone"


def _copy_web(tmp_path: Path) -> Path:
    copy = tmp_path / "web"
    shutil.copytree(WEB, copy)
    return copy


def test_any_change_to_a_shell_file_changes_the_version_and_the_docs_files_do_not(tmp_path: Path) -> None:
    web = _copy_web(tmp_path)
    first = read_shell(web)
    with (web / "static" / "vendor" / "swagger-ui" / "swagger-ui.css").open("a") as docs_file:
        docs_file.write("/* not the app's */\n")
    with (web / "static" / "docs.js").open("a") as docs_file:
        docs_file.write("// not the app's\n")
    assert read_shell(web) == first
    with (web / "static" / "app.css").open("a") as shell_file:
        shell_file.write("/* v2 */\n")
    second = read_shell(web)
    assert second.version != first.version and second.worker != first.worker
    assert second.files["/static/app.css"] != first.files["/static/app.css"]
    assert {url for url in second.files if second.files[url] != first.files[url]} == {"/static/app.css"}
    (web / "sw.js").write_text((web / "sw.js").read_text() + "// the worker itself changed\n")
    assert read_shell(web).version != second.version


def test_a_worker_template_without_its_placeholder_is_refused(tmp_path: Path) -> None:
    web = _copy_web(tmp_path)
    (web / "sw.js").write_text("self.addEventListener('fetch', () => {});\n")
    with pytest.raises(ValueError, match="__SHELL_BUILD__"):
        read_shell(web)


async def test_the_web_directory_comes_from_the_settings(tmp_path: Path) -> None:
    web = _copy_web(tmp_path)
    (web / "static" / "app.css").write_text("/* the copy's */\n")
    app = create_app(fast_settings(f"sqlite:///{tmp_path / 'sitecomms.db'}", web_dir=web))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sitecomms.test") as copy_client:
            assert (await copy_client.get("/static/app.css")).text == "/* the copy's */\n"
            assert _build((await copy_client.get("/sw.js")).text)["version"] == read_shell(web).version


def _pixels(path: Path) -> tuple[int, list[bytes]]:
    """The RGBA rows of one of the committed icons (scripts/make_icons.py writes no row filter)."""
    content = path.read_bytes()
    width, height, depth, colour = struct.unpack(">IIBB", content[16:26])
    assert (width, depth, colour) == (height, 8, 6)
    data = b""
    offset = 8
    while offset < len(content):
        (length,) = struct.unpack(">I", content[offset : offset + 4])
        if content[offset + 4 : offset + 8] == b"IDAT":
            data += content[offset + 8 : offset + 8 + length]
        offset += length + 12
    raw = zlib.decompress(data)
    stride = 1 + 4 * width
    rows = [raw[start : start + stride] for start in range(0, len(raw), stride)]
    assert len(rows) == height and all(row[0] == 0 for row in rows)
    return width, [row[1:] for row in rows]


@pytest.mark.parametrize("size", [192, 512])
def test_the_maskable_icons_are_opaque_and_draw_only_inside_the_safe_zone(size: int) -> None:
    side, rows = _pixels(WEB / "static" / "icons" / f"maskable-{size}.png")
    assert side == size
    brand = bytes([0x1F, 0x6F, 0xEB, 0xFF])
    centre, safe = size / 2, 0.4 * size
    drawn_inside = 0
    for y, row in enumerate(rows):
        for x in range(size):
            pixel = row[4 * x : 4 * x + 4]
            assert pixel[3] == 0xFF, (x, y)  # a mask may show any part of the square
            if math.hypot(x + 0.5 - centre, y + 0.5 - centre) > safe:
                assert pixel == brand, (x, y)
            elif pixel != brand:
                drawn_inside += 1
    assert drawn_inside > 0.1 * size * size  # the glyph is there, not just the background
