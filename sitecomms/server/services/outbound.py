"""The one guarded way the server calls out to a URL a client supplied (a Web Push endpoint).

Such a URL is untrusted: it could point the server at itself, at the private network or at a
cloud metadata service. `check_url` checks its syntax when it is handed in (https only, a host,
no userinfo, at most 2,048 characters, an IP literal only if public). `Outbound.post` checks
again, then resolves the host itself and refuses (`OutboundRefused`) unless every address it
resolves to is public (`is_public`), and connects to the address it checked, so a second DNS
answer cannot rebind the name; hosts in `OutboundPolicy.allowed_hosts` skip the address check
(tests, a push service on the local network) but not https. TLS is verified against the system
CAs plus `ca_file`, with SNI and Host the URL's host. Redirects are never followed (a 3xx is just
a status), at most `max_response_bytes` of a body are read (more closes the connection), and a
whole call takes at most `total_timeout` seconds; any failure to get an answer is
`OutboundFailed(reason)`. Calls are httpcore's HTTP/1.1 over asyncio's transports
(`outbound_stream.py`). Connections are kept alive, a list of idle httpcore connections per
origin, with at most `max_connections` calls in flight and as many idle connections (httpcore's
own pool scans every connection for every request: milliseconds per call at 64 in flight). Push
endpoints are capabilities: logs and reasons name the origin only, never the path.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

import httpcore

from sitecomms.server.services.outbound_stream import AsyncioBackend

__all__ = [
    "Outbound",
    "OutboundFailed",
    "OutboundPolicy",
    "OutboundRefused",
    "OutboundResponse",
    "check_url",
    "is_public",
    "parse_retry_after",
]

log = logging.getLogger("sitecomms.server.services.outbound")

MAX_URL_CHARS = 2048
KEEPALIVE_SECONDS = 60.0
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.?"
)
_DIGITS = re.compile(r"[0-9]+")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")  # inet_aton reads "0x7f000001" or "127.1" as an address
_PRINTABLE_ASCII = re.compile(r"[!-~]*")  # what a serialised URL is made of (urlsplit drops tabs silently)
_DROPPED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class OutboundRefused(Exception):
    """The URL may not be called: not https, malformed, or its host is (or resolves to) not public."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutboundFailed(Exception):
    """No answer came: the host did not resolve, the connection or TLS failed, or time ran out ("timeout")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class OutboundPolicy:
    allowed_hosts: frozenset[str] = frozenset()  # host names or IPs exempt from the public-address check
    ca_file: Path | None = None  # extra CA certificates to trust, beside the system's
    connect_timeout: float = 5
    total_timeout: float = 10
    max_response_bytes: int = 16384

    def allows(self, host: str) -> bool:
        return _normal_host(host) in {_normal_host(allowed) for allowed in self.allowed_hosts}


@dataclass(frozen=True)
class OutboundResponse:
    status: int
    retry_after: float | None  # seconds, from a Retry-After header (seconds or an HTTP-date)


def is_public(address: IPAddress) -> bool:
    """Whether `address` is on the public internet: not loopback, private, link-local (the
    169.254.169.254 metadata service), CGNAT, unique-local, multicast, unspecified or reserved;
    an IPv6 form of an IPv4 address (mapped, 6to4, NAT64) is judged by that IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
        if address.is_site_local:
            return False
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


def check_url(url: str, policy: OutboundPolicy) -> None:
    """OutboundRefused unless `url` is one the server may call (syntax only; `post` also resolves it)."""
    _parse(url, policy)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After value: delay-seconds or an HTTP-date; None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if _DIGITS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


class Outbound:
    """Guarded HTTPS calls, on keep-alive connections kept per origin. `post` calls a URL;
    `aclose` closes the idle connections. Use one `Outbound` on one event loop."""

    def __init__(self, policy: OutboundPolicy, *, max_connections: int, resolver: Resolver | None = None) -> None:
        self._policy = policy
        self._context = ssl.create_default_context()
        if policy.ca_file is not None:
            self._context.load_verify_locations(cafile=policy.ca_file)
        self._backend = _GuardedBackend(policy, resolver or _resolve)
        self._max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)  # calls in flight; the total time starts once in
        self._idle: dict[tuple[bytes, int], list[httpcore.AsyncHTTPConnection]] = {}  # by (host, port)
        self._idle_count = 0
        self._closed = False

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> OutboundResponse:
        """POST `body` to `url`: the status and Retry-After. OutboundRefused if `url` may not be
        called; OutboundFailed when no answer came in time."""
        parts = _parse(url, self._policy)
        shown = f"{parts.scheme}://{parts.netloc}"  # the origin: what logs may name
        host, port = _ascii_host(parts), parts.port or 443
        authority = (f"[{host.decode()}]" if b":" in host else host.decode()) + (f":{parts.port}" if parts.port else "")
        sent = [("Host", authority), ("Content-Length", str(len(body)))]
        sent += [(name, value) for name, value in headers.items() if name.lower() not in _DROPPED_HEADERS]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        limit = self._policy.total_timeout
        request = httpcore.Request(
            "POST",
            httpcore.URL(scheme=b"https", host=host, port=port, target=target.encode()),
            headers=sent,
            content=body,
            extensions={"timeout": {"connect": self._policy.connect_timeout, "read": limit, "write": limit}},
        )
        async with self._slots:
            try:
                async with asyncio.timeout(limit):
                    return await self._exchange(httpcore.Origin(b"https", host, port), request)
            except OutboundRefused as refused:
                log.warning("refused to call %s: %s", shown, refused.reason)
                raise
            except (TimeoutError, httpcore.TimeoutException):
                log.info("no answer from %s within %s s", shown, limit)
                raise OutboundFailed("timeout") from None
            except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
                reason = _describe(exc)
                log.info("calling %s failed: %s", shown, reason)
                raise OutboundFailed(reason) from None

    async def aclose(self) -> None:
        self._closed = True
        idle = [connection for connections in self._idle.values() for connection in connections]
        self._idle.clear()
        self._idle_count = 0
        for connection in idle:
            await connection.aclose()

    async def _exchange(self, origin: httpcore.Origin, request: httpcore.Request) -> OutboundResponse:
        connection = await self._take(origin)
        try:
            response = await connection.handle_async_request(request)
            try:
                received = 0
                async for chunk in response.aiter_stream():
                    received += len(chunk)
                    if received > self._policy.max_response_bytes:  # unread, the connection is closed
                        break
            finally:
                await response.aclose()
        except BaseException:
            await connection.aclose()
            raise
        await self._give_back(origin, connection)
        retry_after = _header(response.headers, b"retry-after")
        return OutboundResponse(response.status, parse_retry_after(retry_after, now=time.time()))

    async def _take(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        """The origin's most recently used idle connection still open, or a new one."""
        key = (origin.host, origin.port)
        while key in self._idle:
            connection = self._idle[key].pop()
            self._removed_from(key)
            if connection.is_idle() and not connection.has_expired():
                return connection
            await connection.aclose()
        return httpcore.AsyncHTTPConnection(
            origin, ssl_context=self._context, keepalive_expiry=KEEPALIVE_SECONDS, network_backend=self._backend
        )

    async def _give_back(self, origin: httpcore.Origin, connection: httpcore.AsyncHTTPConnection) -> None:
        if self._closed or not connection.is_idle():
            await connection.aclose()
            return
        if self._idle_count >= self._max_connections:  # keep at most max_connections idle
            crowded = max(self._idle, key=lambda key: len(self._idle[key]))
            oldest = self._idle[crowded].pop(0)
            self._removed_from(crowded)
            await oldest.aclose()
        self._idle.setdefault((origin.host, origin.port), []).append(connection)
        self._idle_count += 1

    def _removed_from(self, key: tuple[bytes, int]) -> None:
        self._idle_count -= 1
        if not self._idle[key]:
            del self._idle[key]


class _GuardedBackend(AsyncioBackend):
    """The network backend, connecting only to the checked addresses of a host."""

    def __init__(self, policy: OutboundPolicy, resolver: Resolver) -> None:
        self.policy, self.resolver = policy, resolver

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self.resolver(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout("resolving the host took too long") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve the host ({exc.strerror or exc})") from None
        if not addresses:
            raise httpcore.ConnectError("the host resolves to no address")
        if not self.policy.allows(host):
            refused = [address for address in addresses if not is_public(address)]
            if refused:
                raise OutboundRefused(f"the host resolves to an address that is not public ({refused[0]})")
        failure: httpcore.ConnectError | None = None
        for address in addresses:  # the checked addresses themselves: no second lookup
            try:
                return await super().connect_tcp(str(address), port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("no unix sockets")


# Lookups run on threads of their own: a client's name server may hang each one for many
# seconds (a timeout leaves the thread blocked), which must not starve the loop's default
# executor (password hashing and the rest share it).
_LOOKUPS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sitecomms-outbound-dns")


async def _resolve(host: str, port: int) -> list[IPAddress]:
    infos = await asyncio.get_running_loop().run_in_executor(
        _LOOKUPS, functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    )
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def _parse(url: str, policy: OutboundPolicy) -> SplitResult:
    if len(url) > MAX_URL_CHARS:
        raise OutboundRefused(f"the URL is longer than {MAX_URL_CHARS} characters")
    if _PRINTABLE_ASCII.fullmatch(url) is None:
        raise OutboundRefused("the URL has a character that is not printable ASCII (a space, a control)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise OutboundRefused("the URL is malformed (host or port)") from None
    if parts.scheme.lower() != "https":
        raise OutboundRefused("the URL is not https")
    if "@" in parts.netloc:
        raise OutboundRefused("the URL has user information")
    host = parts.hostname
    if not host:
        raise OutboundRefused("the URL has no host")
    if port == 0:
        raise OutboundRefused("the URL's port is out of range")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is None:
        try:
            name = _ascii_host(parts).decode()
        except UnicodeError:
            raise OutboundRefused("the URL's host is not a valid name") from None
        if _HOST_NAME.fullmatch(name) is None or _NUMERIC_LABEL.fullmatch(name.rstrip(".").rsplit(".", 1)[-1]):
            raise OutboundRefused("the URL's host is not a valid name")
    elif not is_public(literal) and not policy.allows(host):
        raise OutboundRefused(f"the URL's host is an address that is not public ({literal})")
    return parts


def _ascii_host(parts: SplitResult) -> bytes:
    host = parts.hostname or ""
    return host.encode("idna") if not host.isascii() else host.encode()


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    return next((value.decode("latin-1") for key, value in headers if key.lower() == name), None)


def _describe(exc: BaseException) -> str:
    detail = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {detail}"[:200]
