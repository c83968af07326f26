"""The outbound guard: only public https hosts (or allowed ones), checked addresses, bounded answers."""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import socket
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sitecomms.server.services.outbound import (
    IPAddress,
    Outbound,
    OutboundFailed,
    OutboundPolicy,
    OutboundRefused,
    check_url,
    is_public,
    parse_retry_after,
)
from tests.server.services.tls_server import Certificates, TLSServer, make_certificates

SECRET_PATH = "/push/capability-7f3a9c"  # a push endpoint's path is a capability: never logged


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def server(certificates: Certificates) -> AsyncIterator[TLSServer]:
    running = TLSServer(certificates)
    async with asyncio.timeout(10):
        await running.start()
    yield running
    async with asyncio.timeout(10):
        await running.stop()


@pytest.fixture
def policy(certificates: Certificates) -> OutboundPolicy:
    return OutboundPolicy(allowed_hosts=frozenset({"127.0.0.1"}), ca_file=certificates.ca_file, total_timeout=5)


async def post(policy: OutboundPolicy, url: str, body: bytes = b"", **options: object) -> tuple[int, float | None]:
    outbound = Outbound(policy, max_connections=4, **options)  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(10):
            response = await outbound.post(url, {"TTL": "60"}, body)
        return response.status, response.retry_after
    finally:
        await outbound.aclose()


# answers


async def test_an_allowed_host_is_called_with_the_body_headers_and_host(
    server: TLSServer, policy: OutboundPolicy
) -> None:
    outbound = Outbound(policy, max_connections=4)
    try:
        async with asyncio.timeout(10):
            response = await outbound.post(
                f"{server.origin}/ok?x=1", {"TTL": "60", "Urgency": "high", "Host": "evil.example"}, b"\x00body"
            )
            again = await outbound.post(f"{server.origin}/ok", {"TTL": "0"}, b"")
    finally:
        await outbound.aclose()
    assert (response.status, response.retry_after) == (201, None)
    assert again.status == 201
    first, second = server.requests
    assert first.target == "/ok?x=1" and first.body == b"\x00body"
    assert first.headers["host"] == f"127.0.0.1:{server.port}"  # the URL's, never the caller's
    assert first.headers["ttl"] == "60" and first.headers["urgency"] == "high"
    assert first.headers["content-length"] == "5"
    assert second.headers["content-length"] == "0" and second.body == b""
    assert server.connections == 1 and first.connection == second.connection == 1  # kept alive


async def test_a_connection_the_server_closed_is_not_used_again(server: TLSServer, policy: OutboundPolicy) -> None:
    outbound = Outbound(policy, max_connections=4)
    try:
        async with asyncio.timeout(10):
            assert (await outbound.post(f"{server.origin}/close", {}, b"")).status == 201  # said so
            assert (await outbound.post(f"{server.origin}/drop", {}, b"")).status == 201  # did not say so
            await server.wait_for_disconnects(2)
            assert (await outbound.post(f"{server.origin}/ok", {}, b"")).status == 201
    finally:
        await outbound.aclose()
    assert [seen.connection for seen in server.requests] == [1, 2, 3]


async def test_at_most_max_connections_are_kept_idle_across_origins(server: TLSServer, policy: OutboundPolicy) -> None:
    both = replace(policy, allowed_hosts=frozenset({"127.0.0.1", "localhost"}))
    origins = [server.origin, f"https://localhost:{server.port}"] * 2
    for max_connections, connections in [(1, 4), (2, 2)]:
        server.connections = 0
        outbound = Outbound(both, max_connections=max_connections)
        try:
            async with asyncio.timeout(10):
                for origin in origins:
                    assert (await outbound.post(f"{origin}/ok", {}, b"")).status == 201
        finally:
            await outbound.aclose()
        assert server.connections == connections


async def test_a_server_certificate_not_from_a_trusted_ca_fails(server: TLSServer, policy: OutboundPolicy) -> None:
    with pytest.raises(OutboundFailed, match="CERTIFICATE_VERIFY_FAILED"):
        await post(replace(policy, ca_file=None), f"{server.origin}/ok")
    assert server.requests == []


async def test_a_redirect_is_not_followed(server: TLSServer, policy: OutboundPolicy) -> None:
    assert await post(policy, f"{server.origin}/redirect") == (301, None)
    assert [seen.target for seen in server.requests] == ["/redirect"]


async def test_a_large_answer_is_not_read_beyond_the_bound(server: TLSServer, policy: OutboundPolicy) -> None:
    for limit, connections in [(16384, 2), (2 << 20, 1)]:
        server.connections = 0
        outbound = Outbound(replace(policy, max_response_bytes=limit), max_connections=4)
        try:
            async with asyncio.timeout(10):
                assert (await outbound.post(f"{server.origin}/big", {}, b"")).status == 200
                assert (await outbound.post(f"{server.origin}/ok", {}, b"")).status == 201
        finally:
            await outbound.aclose()
        # cut short, the connection is closed (the next call needs a new one); read whole, it is kept
        assert server.connections == connections


async def test_a_call_takes_at_most_the_total_time(server: TLSServer, policy: OutboundPolicy) -> None:
    started = time.monotonic()
    with pytest.raises(OutboundFailed) as failed:
        await post(replace(policy, total_timeout=0.3), f"{server.origin}/slow")
    assert failed.value.reason == "timeout"
    assert 0.3 <= time.monotonic() - started < 2
    assert [seen.target for seen in server.requests] == ["/slow"]


async def test_retry_after_is_read_as_seconds_or_a_date(server: TLSServer, policy: OutboundPolicy) -> None:
    assert await post(policy, f"{server.origin}/retry?after=7") == (429, 7.0)
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    status, after = await post(policy, f"{server.origin}/retry?after={when.replace(' ', '%20')}")
    assert status == 429 and after is not None and 115 <= after <= 121


async def test_a_closed_port_fails(certificates: Certificates, policy: OutboundPolicy) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(OutboundFailed, match="ConnectError"):
        await post(policy, f"https://127.0.0.1:{port}/ok")


# refusals

NOT_PUBLIC = [
    "https://127.0.0.1/ok",
    "https://127.1.2.3/ok",
    "https://10.1.2.3/ok",
    "https://192.168.1.1/ok",
    "https://172.16.0.1/ok",
    "https://172.31.255.255/ok",
    "https://169.254.169.254/latest/meta-data/",
    "https://100.64.0.1/ok",
    "https://0.0.0.0/ok",
    "https://224.0.0.1/ok",
    "https://240.0.0.1/ok",
    "https://255.255.255.255/ok",
    "https://[::1]/ok",
    "https://[::]/ok",
    "https://[fc00::1]/ok",
    "https://[fd12:3456::1]/ok",
    "https://[fe80::1]/ok",
    "https://[fec0::1]/ok",
    "https://[ff02::1]/ok",
    "https://[::ffff:127.0.0.1]/ok",
    "https://[::ffff:169.254.169.254]/ok",
    "https://[::ffff:10.0.0.1]/ok",
    "https://[64:ff9b::a00:1]/ok",  # NAT64 of 10.0.0.1
    "https://[2002:7f00:1::]/ok",  # 6to4 of 127.0.0.1
    "https://[::127.0.0.1]/ok",  # IPv4-compatible (deprecated)
]


@pytest.mark.parametrize("url", NOT_PUBLIC)
async def test_an_address_that_is_not_public_is_refused_unless_allowed(
    url: str, server: TLSServer, policy: OutboundPolicy
) -> None:
    strict = replace(policy, allowed_hosts=frozenset())
    with pytest.raises(OutboundRefused, match="not public"):
        check_url(url, strict)
    with pytest.raises(OutboundRefused, match="not public"):
        await post(strict, url)
    host = url.split("//", 1)[1].split("/", 1)[0].strip("[]")
    check_url(url, replace(strict, allowed_hosts=frozenset({host})))
    assert server.connections == 0


async def test_the_local_server_itself_is_refused_when_not_allowed(server: TLSServer, policy: OutboundPolicy) -> None:
    with pytest.raises(OutboundRefused, match="not public"):
        await post(replace(policy, allowed_hosts=frozenset()), f"{server.origin}/ok")
    assert server.connections == 0


async def test_a_name_resolving_to_loopback_is_refused(server: TLSServer, policy: OutboundPolicy) -> None:
    url = f"https://localhost:{server.port}/ok"
    check_url(url, policy)  # a name: only its addresses can tell
    with pytest.raises(OutboundRefused, match="resolves to an address that is not public"):
        await post(policy, url)
    assert server.connections == 0
    assert await post(replace(policy, allowed_hosts=frozenset({"LOCALHOST"})), url) == (201, None)


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__()  # as many threads as the loop's own default (other tests share this loop)
        self.submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


async def test_names_are_resolved_off_the_loops_default_executor(server: TLSServer, policy: OutboundPolicy) -> None:
    """A push endpoint's name server may hang each lookup for many seconds (a timeout leaves the
    thread blocked): such lookups must not take the threads password hashing and the rest share."""
    shared = CountingExecutor()
    loop = asyncio.get_running_loop()
    loop.set_default_executor(shared)
    try:
        allowed = replace(policy, allowed_hosts=frozenset({"localhost"}))
        assert await post(allowed, f"https://localhost:{server.port}/ok") == (201, None)
        assert shared.submitted == 0
    finally:  # the session's loop runs every later test: give it a default executor of its own again
        loop.set_default_executor(ThreadPoolExecutor())
        shared.shutdown(wait=False)


class Resolver:
    """A DNS double: fixed answers per name, and a count of lookups."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append(host)
        return [ipaddress.ip_address(text) for text in self.answers[host]]


async def test_a_name_is_refused_if_any_of_its_addresses_is_not_public(
    server: TLSServer, policy: OutboundPolicy
) -> None:
    resolver = Resolver({"push.example": ["93.184.215.14", "10.0.0.1"]})
    with pytest.raises(OutboundRefused, match=r"not public \(10\.0\.0\.1\)"):
        await post(policy, f"https://push.example:{server.port}/ok", resolver=resolver)
    assert resolver.lookups == ["push.example"]


class FailingResolver:
    def __init__(self, error: OSError | None) -> None:
        self.error = error

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        if self.error is not None:
            raise self.error
        return []


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "cannot resolve the host"),
        (None, "resolves to no address"),
    ],
)
async def test_a_name_that_does_not_resolve_fails(error: OSError | None, reason: str, policy: OutboundPolicy) -> None:
    with pytest.raises(OutboundFailed, match=reason):
        await post(policy, "https://push.example/ok", resolver=FailingResolver(error))


async def test_the_checked_address_is_the_one_connected_to_with_the_names_tls_and_host(
    server: TLSServer, policy: OutboundPolicy
) -> None:
    resolver = Resolver({"push.example": ["127.0.0.1"]})
    allowed = replace(policy, allowed_hosts=frozenset({"push.example"}))
    outbound = Outbound(allowed, max_connections=4, resolver=resolver)
    try:
        async with asyncio.timeout(10):
            for _ in range(3):
                assert (await outbound.post(f"https://push.example:{server.port}/ok", {}, b"")).status == 201
    finally:
        await outbound.aclose()
    assert resolver.lookups == ["push.example"]  # one lookup for the one connection: nothing to rebind
    assert server.connections == 1
    assert {seen.headers["host"] for seen in server.requests} == {f"push.example:{server.port}"}


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/ok", "not https"),
        ("ftp://127.0.0.1/ok", "not https"),
        ("127.0.0.1/ok", "not https"),
        ("https://user:pass@127.0.0.1/ok", "user information"),
        ("https://user@push.example/ok", "user information"),
        ("https:///ok", "no host"),
        ("https://127.0.0.1:70000/ok", "malformed"),
        ("https://127.0.0.1:0/ok", "out of range"),
        ("https://[::1/ok", "malformed"),
        ("https://push.example/" + "a" * 2048, "longer than 2048"),
        ("https://2130706433/ok", "not a valid name"),  # 127.0.0.1 as one number
        ("https://0x7f.1/ok", "not a valid name"),
        ("https://0x7f000001/ok", "not a valid name"),  # what the C resolver reads as 127.0.0.1
        ("https://127.0.0.0x1/ok", "not a valid name"),
        ("https://push.example/a b", "printable ASCII"),  # no request line could carry it
        ("https://push.example/a\x00b", "printable ASCII"),
        ("https://push.example/\tsecret", "printable ASCII"),  # urlsplit would drop the tab silently
        ("https://push.example/caf\u00e9", "printable ASCII"),
        ("https://push..example/ok", "not a valid name"),
        ("https://push_example-/ok", "not a valid name"),
    ],
)
async def test_a_url_that_is_not_a_plain_https_url_is_refused_even_for_an_allowed_host(
    url: str, reason: str, policy: OutboundPolicy
) -> None:
    with pytest.raises(OutboundRefused, match=reason):
        check_url(url, policy)
    with pytest.raises(OutboundRefused, match=reason):
        await post(policy, url)


@pytest.mark.parametrize(
    "url",
    [
        "https://fcm.googleapis.com/fcm/send/x",
        "https://updates.push.services.mozilla.com/wpush/v2/x",
        "https://web.push.apple.com/QGx",
        "https://[2001:4860:4860::8888]/x",
        "https://8.8.8.8:8443/x",
        "https://xn--bcher-kva.example/x",  # an international name, as a browser serialises it
        "https://ntfy.example.org./up123",
    ],
)
def test_public_https_urls_pass_the_check(url: str) -> None:
    check_url(url, OutboundPolicy())


@pytest.mark.parametrize(
    "text", ["8.8.8.8", "93.184.215.14", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_are_public(text: str) -> None:
    assert is_public(ipaddress.ip_address(text))


def test_retry_after_values() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("120", now=now) == 120.0
    assert parse_retry_after(" 0 ", now=now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after("-5", now=now) is None
    assert parse_retry_after(None, now=now) is None


# logs


async def test_logs_name_the_origin_never_the_path(
    server: TLSServer, policy: OutboundPolicy, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    await post(policy, f"{server.origin}{SECRET_PATH}")  # answered (404), with httpcore's debug logs
    with pytest.raises(OutboundFailed):
        await post(replace(policy, total_timeout=0.2), f"{server.origin}/slow{SECRET_PATH}")
    with pytest.raises(OutboundRefused):
        await post(policy, f"https://localhost:{server.port}{SECRET_PATH}")
    with pytest.raises(OutboundFailed):
        await post(replace(policy, ca_file=None), f"{server.origin}{SECRET_PATH}")
    assert [seen.target for seen in server.requests] == [SECRET_PATH, f"/slow{SECRET_PATH}"]
    assert "capability" not in caplog.text
    assert f"https://localhost:{server.port}" in caplog.text and server.origin in caplog.text
