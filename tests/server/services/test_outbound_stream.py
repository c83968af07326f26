"""httpcore's stream on asyncio's transports (services/outbound_stream.py): its failures are
httpcore's exceptions, its timeouts hold, and a connection the peer closed reads as expired.
(The HTTPS calls themselves are tested through `Outbound`, in test_outbound.py.)"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import httpcore
import pytest

from sitecomms.server.services.outbound_stream import AsyncioBackend

TIMEOUT = 10.0
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Serve = Callable[[Handler], Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await asyncio.wait_for(server.wait_closed(), TIMEOUT)


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # says nothing until the client goes
    writer.close()


async def _hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def _not_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 20)
    await writer.drain()
    writer.close()


async def test_a_read_with_no_data_times_out_as_httpcores_read_timeout(
    serve: Serve,
) -> None:
    port = await serve(_silent)
    stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=TIMEOUT)
    try:
        assert stream.get_extra_info("is_readable") is False
        with pytest.raises(httpcore.ReadTimeout):
            await asyncio.wait_for(stream.read(100, timeout=0.05), TIMEOUT)
        assert stream.get_extra_info("server_addr") == ("127.0.0.1", port)
        assert stream.get_extra_info("ssl_object") is None and stream.get_extra_info("unknown") is None
        sock = stream.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        await stream.aclose()


async def test_a_connection_the_peer_closed_reads_empty_and_is_readable_for_httpcore(
    serve: Serve,
) -> None:
    port = await serve(_hangs_up)
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=TIMEOUT, socket_options=options)
    try:
        assert stream.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert await asyncio.wait_for(stream.read(100, timeout=TIMEOUT), TIMEOUT) == b""
        assert stream.get_extra_info("is_readable") is True, "httpcore must take it as expired"
    finally:
        await stream.aclose()


async def test_tls_with_a_peer_that_does_not_speak_it_fails_to_connect(
    serve: Serve,
) -> None:
    context = ssl.create_default_context()
    for handler, error in ((_not_tls, httpcore.ConnectError), (_silent, httpcore.ConnectTimeout)):
        port = await serve(handler)
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=TIMEOUT)
        with pytest.raises(error):
            await asyncio.wait_for(stream.start_tls(context, server_hostname="localhost", timeout=0.5), TIMEOUT)


async def test_writing_to_a_connection_the_peer_reset_fails_as_httpcores_write_error(
    serve: Serve,
) -> None:
    async def resets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close = RST
        writer.transport.abort()

    port = await serve(resets)
    stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=TIMEOUT)
    try:
        with pytest.raises(httpcore.WriteError):
            async with asyncio.timeout(TIMEOUT):
                while True:  # the first writes may still be taken in before the reset is seen
                    await stream.write(b"x" * 65536, timeout=TIMEOUT)
    finally:
        await stream.aclose()


async def test_connect_failures_are_httpcores() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(httpcore.ConnectError):
            await asyncio.wait_for(AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=TIMEOUT), TIMEOUT)
    server = await asyncio.start_server(_silent, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(httpcore.ConnectTimeout):  # no time at all: the connect must wait for the loop once
            await asyncio.wait_for(AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=0), TIMEOUT)
    finally:
        server.close()
    with pytest.raises(httpcore.ConnectError):
        await AsyncioBackend().connect_unix_socket("/tmp/nothing")
