"""The web dashboard: `/` the single page, `/static` its files, `/sw.js` its service worker, the manifest.

The files live in the web directory (`Settings.web_dir`, by default the package's
`sitecomms/web`; no build step). The page gets a strict Content Security Policy (its own
script and styles only, connections to this origin only: `api.security_headers.DASHBOARD_POLICY`,
set with the other security headers on every response), so even a bug that put user content
into HTML could not run a script.

The app shell: `install` reads the shell once, at start-up — `/` (index.html) and every file of
`static/` but the API docs' (`vendor/`, `docs.js`) — and serves `/sw.js` (the `sw.js` template
with `__SHELL_BUILD__` replaced by `{"version", "files": {url: SRI hash}}`). The version hashes
every shell file and the template, so any change to one changes the worker's bytes and browsers
install the new version beside the old (see `web/sw.js` and `web/static/shell.js`). A file
changed on disk without a restart is not picked up: restart the server after deploying files.
`/sw.js` and the manifest are answered `Cache-Control: no-cache`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

WEB = Path(__file__).resolve().parent.parent / "web"  # the default web directory (Settings.web_dir)

PAGE_HEADERS = {"Cache-Control": "no-cache"}  # the security headers: api.security_headers, on every response
NOT_SHELL = ("vendor/", "docs.js")  # static files of the API docs page (/docs), not of the app
BUILD_PLACEHOLDER = "__SHELL_BUILD__"
MANIFEST_TYPE = "application/manifest+json"


@dataclass(frozen=True)
class Shell:
    """The app shell as read at start-up: its version and each URL's Subresource Integrity hash."""

    version: str
    files: dict[str, str]
    worker: bytes  # the served /sw.js


def shell_files(web: Path) -> dict[str, Path]:
    """The shell's URLs and their files: `/` and the app's static files, in URL order."""
    static = web / "static"
    found = {
        "/static/" + path.relative_to(static).as_posix(): path
        for path in static.rglob("*")
        if path.is_file()
        and not path.name.startswith(".")
        and not path.relative_to(static).as_posix().startswith(NOT_SHELL)
    }
    return {"/": web / "index.html"} | dict(sorted(found.items()))


def read_shell(web: Path) -> Shell:
    """The shell of the web directory `web` now (the server calls it once, at start-up)."""
    template = (web / "sw.js").read_text(encoding="utf-8")
    if template.count(BUILD_PLACEHOLDER) != 1:
        raise ValueError(f"{web / 'sw.js'} must contain {BUILD_PLACEHOLDER} exactly once")
    version = hashlib.sha256(template.encode("utf-8"))
    files: dict[str, str] = {}
    for url, path in shell_files(web).items():
        content = path.read_bytes()
        digest = hashlib.sha256(content).digest()
        files[url] = "sha256-" + base64.b64encode(digest).decode("ascii")
        version.update(f"{url}\0{len(content)}\0".encode())
        version.update(digest)
    short = version.hexdigest()[:16]
    build = json.dumps({"version": short, "files": files}, indent=2)
    return Shell(short, files, template.replace(BUILD_PLACEHOLDER, build).encode("utf-8"))


def install(app: FastAPI, web: Path = WEB) -> None:
    index = web / "index.html"
    manifest = web / "manifest.webmanifest"
    shell = read_shell(web)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(index, media_type="text/html", headers=PAGE_HEADERS)

    @app.api_route("/sw.js", methods=["GET", "HEAD"], include_in_schema=False)
    async def service_worker() -> Response:
        return Response(shell.worker, media_type="text/javascript", headers=PAGE_HEADERS)

    @app.api_route("/manifest.webmanifest", methods=["GET", "HEAD"], include_in_schema=False)
    async def web_manifest() -> FileResponse:
        return FileResponse(manifest, media_type=MANIFEST_TYPE, headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=web / "static"), name="static")
