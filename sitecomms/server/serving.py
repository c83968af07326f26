"""How the server is run: `config(app, settings)` is the one uvicorn configuration of every runner.

`sitecomms serve` (and so the benchmark and the tests, which start it) serves through `run`.
The configuration bounds what a client can make the server hold before the app sees a request
(`head_limits.BoundedHttpToolsProtocol`: request line, header bytes and count, time to send
them), bounds h11's buffer the same way should someone choose it, trusts `X-Forwarded-*` only
from `forwarded_allow_ips`, and turns uvicorn's per-occurrence reports of clients' protocol
errors (a malformed request, invalid UTF-8 in a WebSocket text frame) into `ClientErrors`: one
INFO line per kind per interval with a count of the rest, never an ERROR traceback. Its log
configuration is uvicorn's own (`log_format` text) or JSON lines (`logs.json_config`), and in
both uvicorn's loggers pass `logs.UvicornRedaction` (no query, token or frame content shown).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from sitecomms.config import Settings
from sitecomms.protocol.frames import MAX_FRAME_BYTES
from sitecomms.server import logs
from sitecomms.server.head_limits import HeadLimits, bounded_protocol

UVICORN_LOG = "uvicorn.error"  # uvicorn logs its protocol errors here, and `serve`'s log config shows it
REPORT_INTERVAL_SECONDS = 10.0
GRACEFUL_SHUTDOWN_SECONDS = 5  # then open connections are dropped: clients resume elsewhere

# uvicorn's messages for errors the client made, by the kind reported instead
UVICORN_CLIENT_ERRORS = {
    "Invalid HTTP request received.": "invalid HTTP request",
    "Invalid UTF-8 sequence received from client.": "invalid UTF-8 in a WebSocket text frame",
    "Unsupported upgrade request.": "unsupported upgrade request",
}


class ClientErrors:
    """Reports clients' protocol errors at INFO: at most one line per kind per interval."""

    def __init__(
        self,
        interval: float = REPORT_INTERVAL_SECONDS,
        logger: str = UVICORN_LOG,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.logger = logging.getLogger(logger)
        self.clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def report(self, kind: str) -> None:
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        more = self._suppressed.pop(kind, 0)
        if more:
            self.logger.info("client protocol error: %s (and %d more since the last report)", kind, more)
        else:
            self.logger.info("client protocol error: %s", kind)


class ClientErrorFilter(logging.Filter):
    """On uvicorn's logger: its reports of client errors go to `ClientErrors` instead."""

    def __init__(self, errors: ClientErrors) -> None:
        super().__init__()
        self.errors = errors

    def filter(self, record: logging.LogRecord) -> bool:
        kind = UVICORN_CLIENT_ERRORS.get(record.msg) if isinstance(record.msg, str) else None
        if kind is None:
            return True
        self.errors.report(kind)
        return False


def _route_client_errors(errors: ClientErrors) -> None:
    logger = logging.getLogger(UVICORN_LOG)
    for old in [f for f in logger.filters if isinstance(f, ClientErrorFilter)]:
        logger.removeFilter(old)
    logger.addFilter(ClientErrorFilter(errors))


def head_limits(settings: Settings, errors: ClientErrors) -> HeadLimits:
    return HeadLimits(
        line_bytes=settings.max_request_line_bytes,
        head_bytes=settings.max_request_head_bytes,
        headers=settings.max_request_headers,
        timeout_seconds=settings.request_head_timeout_seconds,
        report=errors.report,
    )


def config(app: Any, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration for `app` (an ASGI app) on `settings.host`:`settings.port`."""
    errors = ClientErrors()
    limits = head_limits(settings, errors)
    logging_config: dict[str, Any] = (
        {"log_config": logs.json_config(settings.log_level)} if settings.log_format == "json" else {}
    )
    configured = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=bounded_protocol(limits),
        ws="auto",
        ws_max_size=MAX_FRAME_BYTES,
        h11_max_incomplete_event_size=limits.head_bytes,  # were h11 chosen instead of httptools
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",  # in JSON, the app's access line is at info (api/request_id.py)
        **logging_config,
    )
    _route_client_errors(errors)  # after uvicorn.Config, which (re)configures its loggers
    logs.guard_uvicorn()
    return configured


def run(app: Any, settings: Settings) -> None:
    """Serve `app` until SIGINT or SIGTERM; exit with uvicorn's status 3 if it could not start."""
    configured = config(app, settings)
    configured.load_app()
    server = uvicorn.Server(configured)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
