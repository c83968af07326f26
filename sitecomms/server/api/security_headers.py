"""The security headers of every HTTP response, and the one place that says what they are.

Every response gets `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`,
`X-Frame-Options: DENY` and a Content Security Policy (with `frame-ancestors 'none'`); with
`hsts_seconds` set (the server is reached over HTTPS), `Strict-Transport-Security` too; the
API's answers (`/v1/...`: tokens, messages, the audit log) `Cache-Control: no-store`, so no
browser or proxy cache keeps them (RFC 6749 §5.1 asks it of token answers). The
policy is the API's — `default-src 'none'`: a JSON answer loads nothing — except on the two HTML
pages: the dashboard (`/`: its own script, styles, connections, service worker and manifest,
all of this origin) and the API docs (`/docs`: the vendored Swagger UI and this origin's schema),
and on the service worker's script (`/sw.js`: a worker's policy is its own response's, and it
imports this origin's modules, fetches the app shell from it and shows notifications with its
icons). `install` wraps the whole middleware stack, Starlette's error middleware included, so
even an unhandled error's 500 is covered; the lists are built once and appended to
`http.response.start`. The server's own answers before the app (414, 431, 408 in `head_limits`) carry `API_HEADERS`.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Headers = list[tuple[bytes, bytes]]

API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DASHBOARD_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; worker-src 'self'; manifest-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# img-src: the icon and badge of the notifications the worker shows for a push.
WORKER_POLICY = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_POLICIES = {
    "/": DASHBOARD_POLICY,
    "/docs": DOCS_POLICY,
    "/sw.js": WORKER_POLICY,
}  # by exact path; any other: API_POLICY

_COMMON: Headers = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def headers(policy: str, hsts_seconds: int = 0) -> Headers:
    """The security headers of a response under `policy`."""
    listed = [*_COMMON, (b"content-security-policy", policy.encode("ascii"))]
    if hsts_seconds > 0:
        listed.append((b"strict-transport-security", f"max-age={hsts_seconds}".encode("ascii")))
    return listed


API_HEADERS = headers(API_POLICY)


class SecurityHeaders:
    """Pure ASGI middleware appending the security headers to every HTTP response."""

    def __init__(self, app: ASGIApp, *, hsts_seconds: int = 0) -> None:
        self.app = app
        self._default = headers(API_POLICY, hsts_seconds)
        self._pages = {path: headers(policy, hsts_seconds) for path, policy in PAGE_POLICIES.items()}
        self._api = [*self._default, (b"cache-control", b"no-store")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        extra = self._api if path.startswith("/v1/") else self._pages.get(path, self._default)

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                present: Sequence[tuple[bytes, bytes]] = message.get("headers", ())
                message["headers"] = [*present, *extra]
            await send(message)

        await self.app(scope, receive, send_secured)


def install(app: FastAPI, *, hsts_seconds: int = 0) -> None:
    """Wrap `app`'s whole middleware stack (outside Starlette's error middleware) in `SecurityHeaders`."""
    build = app.build_middleware_stack

    def build_secured() -> ASGIApp:
        return SecurityHeaders(build(), hsts_seconds=hsts_seconds)

    app.build_middleware_stack = build_secured  # type: ignore[method-assign]
