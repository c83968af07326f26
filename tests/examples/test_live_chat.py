"""Two terminals with examples/live_chat.py: messages arrive live both ways (issue 3's "done when")."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.servers import aserving, base_env, run_cli

CHAT = Path(__file__).resolve().parents[2] / "examples" / "live_chat.py"
TIMEOUT = 20.0


class Terminal:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen: list[str] = []

    async def wait_for(self, text: str) -> str:
        """The first output line containing `text`."""
        assert self.process.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            while True:
                line = (await self.process.stdout.readline()).decode()
                assert line, f"the chat exited; it printed: {self.seen}"
                self.seen.append(line)
                if text in line:
                    return line

    async def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()


async def open_terminal(base_url: str, *args: str) -> Terminal:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHAT),
        "--server",
        base_url,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    return Terminal(process)


async def test_two_terminals_chat_live(tmp_path: Path) -> None:
    env = base_env(f"sqlite:///{tmp_path / 'chat.db'}")
    demo = await asyncio.to_thread(run_cli, ["demo"], env)
    assert demo.returncode == 0, demo.stdout
    async with aserving(env, tmp_path / "server.log") as served:
        medic = await open_terminal(served.base_url, "--email", "medic1@demo.example")
        admin = await open_terminal(served.base_url, "--email", "admin@demo.example", "--to", "Maya Lindqvist")
        try:
            await medic.wait_for("signed in as Maya Lindqvist")
            await admin.wait_for("writing to Maya Lindqvist")
            await medic.type("hello from the field")
            assert "Maya Lindqvist: hello from the field" in await admin.wait_for("hello from the field")
            await admin.type("received, on our way")
            assert "Admin: received, on our way" in await medic.wait_for("received, on our way")
        finally:
            for terminal in (medic, admin):
                terminal.process.kill()
                await asyncio.wait_for(terminal.process.wait(), TIMEOUT)
