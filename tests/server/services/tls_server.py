"""A small HTTPS/1.1 server on 127.0.0.1 for the outbound client's tests, with its own test CA.

`make_certificates` writes a CA and a server certificate it signed (for 127.0.0.1, ::1,
localhost and push.example), with the push double's `sitecomms.bench.local_tls`. `TLSServer`
answers by path, with h11 checking the protocol strictly: `/ok` 201 with a Location;
`/redirect` 301 to /ok; `/big` 200 with a 1 MiB body; `/slow` (and /slow/...) no answer until
the server stops; `/retry?after=<value>` 429 with that Retry-After; `/close` 201 with
`Connection: close`; `/drop` 201, then the connection is closed without saying so. It records
every request (`requests`), counts connections (`connections`) and the ones ended
(`disconnects`, awaitable with `wait_for_disconnects`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import h11

from sitecomms.bench import local_tls
from sitecomms.bench.local_tls import Certificates

BIG_BODY = b"x" * (1 << 20)


def make_certificates(directory: Path) -> Certificates:
    return local_tls.make_certificates(directory, names=("push.example", "localhost", "127.0.0.1", "::1"))


@dataclass(frozen=True)
class Seen:
    target: str  # path and query
    headers: dict[str, str]  # lowercase names
    body: bytes
    connection: int  # which connection (1, 2, ...) it came on


@dataclass
class TLSServer:
    certificates: Certificates
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    disconnects: int = 0
    _ended: asyncio.Condition = field(default_factory=asyncio.Condition)
    _server: asyncio.Server | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> None:
        context = self.certificates.server_context()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=context)

    async def wait_for_disconnects(self, count: int) -> None:
        async with self._ended:
            await self._ended.wait_for(lambda: self.disconnects >= count)

    async def stop(self) -> None:
        self._stopping.set()
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        drop = False
        try:
            drop = await self._serve(reader, writer, self.connections)
        except (ConnectionError, ssl.SSLError, h11.RemoteProtocolError):
            pass  # the client went away (as it does after reading part of /big)
        finally:
            self._handlers.discard(task)
            if drop:
                writer.transport.abort()  # no TLS close_notify: the socket just closes
            else:
                writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.CancelledError):
                await writer.wait_closed()
            async with self._ended:
                self.disconnects += 1
                self._ended.notify_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> bool:
        """Answer requests until the connection ends; True when it is to be dropped (after /drop)."""
        connection = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request, body = event, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                headers = {name.decode().lower(): value.decode() for name, value in request.headers}
                self.requests.append(Seen(request.target.decode(), headers, body, number))
                await self._answer(connection, writer, request.target.decode())
                if request.target.startswith(b"/drop"):
                    return True
                if connection.our_state is h11.MUST_CLOSE:
                    return False
                connection.start_next_cycle()
            else:  # ConnectionClosed
                return False

    async def _answer(self, connection: h11.Connection, writer: asyncio.StreamWriter, target: str) -> None:
        parts = urlsplit(target)
        route = parts.path.split("/")[1]  # /slow/anything is /slow
        if route == "ok":
            status, headers, body = 201, [("Location", f"{self.origin}/message/1")], b""
        elif route == "redirect":
            status, headers, body = 301, [("Location", f"{self.origin}/ok")], b""
        elif route in ("close", "drop"):
            status, headers, body = 201, [("Connection", "close")] if route == "close" else [], b""
        elif route == "big":
            status, headers, body = 200, [], BIG_BODY
        elif route == "slow":
            await self._stopping.wait()
            return
        elif route == "retry":
            status, headers, body = 429, [("Retry-After", parse_qs(parts.query)["after"][0])], b""
        else:
            status, headers, body = 404, [], b""
        headers.append(("Content-Length", str(len(body))))
        writer.write(connection.send(h11.Response(status_code=status, headers=headers)))
        if body:
            writer.write(connection.send(h11.Data(data=body)))
        writer.write(connection.send(h11.EndOfMessage()))
        await writer.drain()
