"""Bounds on a request's head, enforced while it is read: `BoundedHttpToolsProtocol`.

uvicorn's httptools protocol buffers a request line and headers of any size and any number, and
waits for them forever: one client could make the server hold megabytes per connection, or
hold thousands of connections open by sending a header a minute. This subclass feeds the parser
at most `head_bytes` bytes of a head (so nothing more is ever buffered), counts the header
fields and the target's length as they are parsed, and gives each head `timeout_seconds` to
arrive from its first byte (from the connection's start for the first request). Over a limit the
client gets 414 (target) or 431 (headers), out of time 408 (or, having sent nothing, only the
close); then the connection is closed. What happens between requests is uvicorn's own:
`timeout_keep_alive` bounds an idle keep-alive connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from sitecomms.server.api.security_headers import API_HEADERS

LINGER_SECONDS = 2.0  # after refusing, read and drop what the client still sends, so it sees the answer


@dataclass(frozen=True)
class HeadLimits:
    line_bytes: int
    head_bytes: int
    headers: int
    timeout_seconds: float
    report: Callable[[str], None]  # told the kind of each refusal (rate-limited logging)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; `_Refusal` says what to answer."""


@dataclass(frozen=True)
class _Refusal:
    status: int
    kind: str


_URI_TOO_LONG = _Refusal(414, "request target too long")
_TOO_MANY_HEADERS = _Refusal(431, "too many request headers")
_HEAD_TOO_LARGE = _Refusal(431, "request headers too large")
_HEAD_TIMEOUT = _Refusal(408, "request headers not received in time")


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with `limits` on each request's head (see the module doc)."""

    limits: ClassVar[HeadLimits]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._reading_head = True  # until this request's headers are complete
        self._head_bytes = 0  # fed to the parser for the head being read
        self._header_count = 0
        self._refusal: _Refusal | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: dropped unread
        while data and self._reading_head:
            room = self.limits.head_bytes - self._head_bytes
            if room <= 0:
                self._refuse(_HEAD_TOO_LARGE)
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            if not self._feed(piece):
                return
        if data:
            self._feed(data)

    def _feed(self, data: bytes) -> bool:
        """uvicorn's `data_received`, with refusals; False once the connection is no longer ours to parse."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(self._refusal)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return False
        return not self.transport.is_closing()

    # parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        if self._head_timer is None:
            self._start_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.line_bytes:
            self._refusal = _URI_TOO_LONG
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.headers:
            self._refusal = _TOO_MANY_HEADERS
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True
        self._head_bytes = 0

    # time and refusals

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.timeout_seconds, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            self._start_head_timer()  # a pipelined head waits behind a response still being sent
        elif self._head_bytes == 0 and self.cycle is None:
            self.limits.report(_HEAD_TIMEOUT.kind)
            self.transport.close()  # nothing was asked: nothing to answer
        else:
            self._refuse(_HEAD_TIMEOUT)

    def _refuse(self, refusal: _Refusal) -> None:
        """Answer `refusal.status` and close; what the client still sends meanwhile is dropped."""
        self._stop_head_timer()
        self._refused = True
        self.limits.report(refusal.kind)
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a pipelined head: the answer cannot go in the middle of a response
            return
        body = f"{STATUS_LINE[refusal.status][13:-2].decode('ascii')}\n".encode("ascii")
        lines = [STATUS_LINE[refusal.status]]
        for name, value in [*self.server_state.default_headers, *API_HEADERS]:
            lines += [name, b": ", value, b"\r\n"]
        lines += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(lines))
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the answer, then EOF; closing at once could reset it away
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


def bounded_protocol(limits: HeadLimits) -> type[BoundedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to `limits`."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})
