"""`GET /metrics`: this process's Prometheus metrics, to the bearer of `SITECOMMS_METRICS_TOKEN`.

On the server's own port, behind a token, rather than on a port of its own: every process
already has its address (Prometheus scrapes each one directly, never through the balancer),
there is no second listener or thread to run, and the token is compared in constant time.
Without a token set the route does not exist (404); a missing or wrong token is a 401. It is
a plain Starlette route (a header is its one input, which `route.Route` does not serve) and
is left out of the OpenAPI document.
"""

from __future__ import annotations

import hmac

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from sitecomms.protocol.errors import ErrorCode
from sitecomms.server.api.responses import error
from sitecomms.server.metrics import CONTENT_TYPE, Metrics

PATH = "/metrics"


def install(app: FastAPI, metrics: Metrics, token: str | None) -> None:
    if token is None:
        return
    expected = f"Bearer {token}".encode()

    async def scrape(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode("latin-1", "replace")
        if not hmac.compare_digest(given, expected):
            return error(ErrorCode.UNAUTHENTICATED, "a valid metrics token is required")
        return Response(metrics.exposition(), media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    app.router.routes.append(_Route(PATH, scrape, methods=["GET"], include_in_schema=False))


class _Route(Route):
    """A plain route that, as FastAPI's do, names itself in the scope once matched (the request
    metrics' `route` label: `/metrics`, not `unmatched`)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child
