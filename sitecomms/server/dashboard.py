"""The web dashboard: `/` serves the single page and `/static` its script and styles.

The files live in `sitecomms/web` (no build step). The page gets a strict Content Security
Policy (its own script and styles only, connections to this origin only:
`api.security_headers.DASHBOARD_POLICY`, set with the other security headers on every
response), so even a bug that put user content into HTML could not run a script.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

WEB = Path(__file__).resolve().parent.parent / "web"

PAGE_HEADERS = {"Cache-Control": "no-cache"}  # the security headers: api.security_headers, on every response


def install(app: FastAPI) -> None:
    index = WEB / "index.html"

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(index, media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=WEB / "static"), name="static")
