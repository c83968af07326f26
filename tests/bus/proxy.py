"""A TCP proxy for broker failure tests: forward, refuse, or freeze connections like a dead network.

- `forward` (the default): new connections are piped to the target;
- `refuse`: new connections are accepted and closed at once (a broker that is down), and counted
  in `refused`, so a test can see a client keep retrying;
- `freeze()`: every open connection stops moving bytes in both directions but stays open, as when
  a NAT or firewall drops a flow or a host hangs: no FIN, no RST, only silence. New connections
  are still forwarded, so a client that notices can reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class _Pipe:
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    frozen: bool = False


class Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "forward"
        self.refused = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._pipes: list[_Pipe] = []
        self._held: list[asyncio.StreamWriter] = []

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in self._pipes:
            for task in pipe.tasks:
                task.cancel()
            for writer in pipe.writers:
                writer.close()
        for writer in self._held:
            writer.close()
        for pipe in self._pipes:
            await asyncio.gather(*pipe.tasks, return_exceptions=True)

    def freeze(self) -> int:
        """Silence every open connection (kept open); returns how many were frozen."""
        count = 0
        for pipe in self._pipes:
            if not pipe.frozen and pipe.tasks and not all(t.done() for t in pipe.tasks):
                pipe.frozen = True
                count += 1
                for task in pipe.tasks:
                    task.cancel()
                self._held.extend(pipe.writers)  # keep the sockets open: silence, not a close
        return count

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            self.refused += 1
            writer.close()
            return
        self.accepted += 1
        try:
            async with asyncio.timeout(5):
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except (OSError, TimeoutError):
            writer.close()
            return
        pipe = _Pipe(writers=[writer, up_writer])
        pipe.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, pipe)),
            asyncio.create_task(self._pump(up_reader, writer, pipe)),
        ]
        self._pipes.append(pipe)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pipe: _Pipe) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not pipe.frozen:
                with contextlib.suppress(Exception):
                    writer.close()
