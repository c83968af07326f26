"""Real servers and helpers for the SDK and `sitecomms chat` tests.

- `demo_database(directory)`: a SQLite server database holding the demo org (made once per
  test process with `sitecomms demo`, then copied: a copy costs milliseconds, a demo 1.5 s).
- `Server`: one `sitecomms serve` process that can be stopped and started again on the same
  port (a client keeps its URL, so a restarted server must come back where it was).
- `ApiUser`: the server's HTTP API as one user, for checking what the server holds.
- `CLIENT_SCRIPT`: a small program driving `sitecomms.client.Client` in its own process.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import shutil
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sitecomms.protocol.requests import LoginRequest, SendMessageRequest, body
from tests.servers import HOST, READY_TIMEOUT, Served, base_env, free_port, run_cli, start

PASSWORD = "demo-password"
ADMIN = "admin@demo.example"
ADMIN_NAME = "Alex Morgan"
MEDIC = "medic1@demo.example"
MEDIC_NAME = "Maya Lindqvist"
TIMEOUT = 20.0  # seconds for any one awaited event
HTTP_TIMEOUT = 10.0
CLIENT_SCRIPT = Path(__file__).with_name("client_process.py")

_template: dict[str, Path] = {}


def demo_database(directory: Path) -> str:
    """A fresh copy of a server database with the demo org; returns its URL."""
    if "path" not in _template:
        home = Path(tempfile.mkdtemp(prefix="sitecomms-demo-template-"))
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        template = home / "demo.db"
        result = run_cli(["demo"], base_env(f"sqlite:///{template}"))
        assert result.returncode == 0, f"sitecomms demo failed:\n{result.stdout}\n{result.stderr}"
        _template["path"] = template
    target = directory / f"server-{uuid.uuid4().hex[:6]}.db"
    source = sqlite3.connect(_template["path"])
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)  # consistent even if the template has a WAL beside it
    finally:
        copy.close()
        source.close()
    return f"sqlite:///{target}"


class Server:
    """`sitecomms serve` on one port, which `up()` reuses after `down()`."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env = env
        self.directory = directory
        self.port = free_port()
        self.served: Served | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _start(self) -> Served:
        self.starts += 1
        return start(self.env, self.directory / f"server-{self.port}-{self.starts}.log", port=self.port)

    async def up(self) -> Served:
        assert self.served is None, "already running"
        self.served = await asyncio.wait_for(asyncio.to_thread(self._start), 3 * READY_TIMEOUT + 10)
        return self.served

    async def down(self) -> None:
        if self.served is not None:
            served, self.served = self.served, None
            await asyncio.wait_for(asyncio.to_thread(served.stop), 30)


@contextlib.asynccontextmanager
async def server(directory: Path, **env: str) -> AsyncIterator[Server]:
    """A demo-org server on a fresh database copy; stopped at the end, whatever happened."""
    served = Server(base_env(demo_database(directory), **env), directory)
    try:
        await served.up()
        yield served
    finally:
        await served.down()


@dataclass
class ApiUser:
    """The HTTP API as one signed-in user (an admin, usually): the server's side of the story."""

    base_url: str
    token: str

    @classmethod
    async def login(cls, base_url: str, email: str = ADMIN) -> ApiUser:
        async with httpx.AsyncClient(base_url=base_url, timeout=HTTP_TIMEOUT) as http:
            response = await http.post("/v1/auth/login", json=body(LoginRequest(email, PASSWORD)))
        assert response.status_code == 200, response.text
        return cls(base_url, response.json()["access_token"])

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, timeout=HTTP_TIMEOUT, headers={"Authorization": f"Bearer {self.token}"}
        )

    async def get(self, path: str, **params: Any) -> Any:
        async with self.http() as http:
            response = await http.get(path, params=params or None)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    async def conversations(self) -> list[dict[str, Any]]:
        listing: list[dict[str, Any]] = (await self.get("/v1/conversations"))["conversations"]
        return listing

    async def conversation_id(self, name: str) -> str:
        return str(next(c["id"] for c in await self.conversations() if c["name"] == name))

    async def thread(self, conversation_id: str) -> list[dict[str, Any]]:
        """Every message of the conversation, oldest first."""
        pages: list[list[dict[str, Any]]] = []
        before: str | None = None
        async with self.http() as http:
            for _ in range(1000):
                params: dict[str, Any] = {"limit": 200}
                if before is not None:
                    params["before"] = before
                response = await http.get(f"/v1/conversations/{conversation_id}/messages", params=params)
                assert response.status_code == 200, response.text
                page = response.json()
                pages.append(page["messages"])
                if not page["has_more"]:
                    break
                before = page["next_before"]
        return [message for page in reversed(pages) for message in page]

    async def send(self, conversation_id: str, content: str, key: str | None = None) -> dict[str, Any]:
        [sent] = await self.send_many([(conversation_id, content)], key=key)
        return sent

    async def send_many(self, messages: list[tuple[str, str]], *, key: str | None = None) -> list[dict[str, Any]]:
        """POST each (conversation id, content) in order on one keep-alive connection."""
        sent: list[dict[str, Any]] = []
        async with self.http() as http:
            for conversation_id, content in messages:
                request = SendMessageRequest(conversation_id, content, key or str(uuid.uuid4()))
                response = await http.post("/v1/messages", json=body(request))
                assert response.status_code in (200, 201), response.text
                sent.append(response.json())
        return sent


async def run_client(*args: str, within: float = 60.0) -> str:
    """Run the client program to completion; returns its output, which must show success."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CLIENT_SCRIPT),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), within)
    finally:
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), 10)
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"client {args} exited {process.returncode}:\n{text}"
    return text
