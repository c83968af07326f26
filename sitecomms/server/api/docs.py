"""`/docs`: the API reference page, Swagger UI from the vendored, pinned copy — no CDN.

Swagger UI (`swagger-ui-dist`) lives in `web/static/vendor/swagger-ui/` with a manifest of its
version and the sha384 of each file; the page loads each with that `integrity`, and starts it
with `web/static/docs.js` (no inline script), so its policy (`security_headers.DOCS_POLICY`)
allows this origin only. The schema is FastAPI's, at `/openapi.json`.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse

VENDOR = Path(__file__).resolve().parent.parent.parent / "web" / "static" / "vendor" / "swagger-ui"
MANIFEST = VENDOR / "manifest.json"
URL = "/static/vendor/swagger-ui"


def page(title: str) -> str:
    """The page's HTML, with each vendored file's integrity from the manifest."""
    files = json.loads(MANIFEST.read_text())["files"]
    css, js = files["swagger-ui.css"], files["swagger-ui-bundle.js"]
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{html.escape(title)} - API docs</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="{URL}/swagger-ui.css" integrity="{css}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{URL}/swagger-ui-bundle.js" integrity="{js}"></script>
  <script src="/static/docs.js"></script>
</body>
</html>
"""


def install(app: FastAPI) -> None:
    content = page(app.title)

    async def docs(_request: Request) -> HTMLResponse:
        return HTMLResponse(content, headers={"Cache-Control": "no-cache"})

    app.add_route("/docs", docs, methods=["GET", "HEAD"], include_in_schema=False)
