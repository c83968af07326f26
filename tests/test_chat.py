"""`sitecomms chat`, the terminal client, driven as a user would: real chat processes against a
real server (typing into stdin, reading stdout), and the `ChatApp` harness in-process."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

from sitecomms import chat as chat_app
from sitecomms.chat import HELP, ChatApp, shown
from sitecomms.client import Client, ConnectionState, Conversation, Me, Message, SiteCommsError
from sitecomms.protocol.enums import ConversationType, MessageStatus, Role
from tests.client.harness import ADMIN, ADMIN_NAME, MEDIC, MEDIC_NAME, PASSWORD, TIMEOUT, ApiUser, server
from tests.servers import SITECOMMS


class Terminal:
    """One `sitecomms chat` process: type lines, wait for output."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen: list[str] = []

    async def wait_for(self, pattern: str) -> str:
        """The first new output line matching the regular expression `pattern`."""
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    line = (await self.process.stdout.readline()).decode()
                    assert line, f"the chat exited before printing {pattern!r}; it printed:\n{''.join(self.seen)}"
                    self.seen.append(f"{asyncio.get_running_loop().time():.2f} " + line)
                    if re.search(pattern, line):
                        return line.rstrip("\n")
        except TimeoutError:
            raise AssertionError(f"no line matching {pattern!r}; the chat printed:\n{''.join(self.seen)}") from None

    async def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def quit(self) -> str:
        """/quit, then the rest of its output; it must exit cleanly."""
        await self.type("/quit")
        assert self.process.stdout is not None
        rest, _ = await asyncio.wait_for(self.process.communicate(), TIMEOUT)
        self.seen.append(rest.decode())
        assert self.process.returncode == 0, "".join(self.seen)
        assert "Traceback" not in "".join(self.seen), "".join(self.seen)
        return rest.decode()


@asynccontextmanager
async def chat(base_url: str, email: str, store: Path) -> AsyncIterator[Terminal]:
    process = await asyncio.create_subprocess_exec(
        str(SITECOMMS),
        "chat",
        "--server",
        base_url,
        "--email",
        email,
        "--password",
        PASSWORD,
        "--store",
        str(store),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("SITECOMMS_")}, "PYTHONUNBUFFERED": "1"},
    )
    terminal = Terminal(process)
    try:
        yield terminal
    finally:
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), TIMEOUT)


async def test_two_chat_terminals_talk_live(tmp_path: Path) -> None:
    async with (
        server(tmp_path) as srv,
        chat(srv.base_url, MEDIC, tmp_path / "medic.db") as medic,
        chat(srv.base_url, ADMIN, tmp_path / "admin.db") as admin,
    ):
        await medic.wait_for(f"signed in as {MEDIC_NAME} \\(medic\\)")
        await medic.wait_for(r"^\s*\d+\. Admin\s")
        await medic.wait_for(r"^\[live\]$")
        await admin.wait_for(f"signed in as {ADMIN_NAME} \\(admin\\)")
        await admin.wait_for(r"^\[live\]$")

        await medic.type("/open Admin")
        await medic.wait_for("^--- Admin ---$")
        await medic.wait_for(r"Admin: Thanks Maya\. Do you need more dressings\?")  # the history
        await admin.type(f"/open {MEDIC_NAME}")
        await admin.wait_for(f"^--- {MEDIC_NAME} ---$")

        await medic.type("Need more dressings at site B")
        assert (await medic.wait_for("You: Need more dressings")).endswith("(queued)")
        # observers coalesce: if the admin's read receipt comes quickly, "read" is the next news
        await medic.wait_for(r"'Need more dressings at site B' is now (sent|read)")
        await admin.wait_for(f"{MEDIC_NAME}: Need more dressings at site B$")

        await admin.type("Dressings on the next truck")
        await admin.wait_for("You: Dressings on the next truck")
        await medic.wait_for("^\\[\\d\\d:\\d\\d\\] Admin: Dressings on the next truck$")

        # an admin's broadcast shows up as activity elsewhere for the medic
        admin_http = await ApiUser.login(srv.base_url)
        await admin_http.send(await admin_http.conversation_id("Broadcast"), "Radio check at 15:00")
        await medic.wait_for(r"\(new in Broadcast: Radio check at 15:00\)")

        await medic.quit()
        await admin.quit()
        thread = await admin_http.thread(await admin_http.conversation_id(MEDIC_NAME))
        contents = [m["content"] for m in thread]
        assert contents.count("Need more dressings at site B") == 1
        assert contents.count("Dressings on the next truck") == 1


async def test_chat_offline_says_so_and_delivers_the_queue_when_the_server_is_back(tmp_path: Path) -> None:
    store = tmp_path / "medic.db"
    async with server(tmp_path) as srv:
        async with chat(srv.base_url, MEDIC, store) as first:  # the first sign-in needs the server
            await first.wait_for(r"^\[live\]$")
            await first.quit()

        await srv.down()
        async with chat(srv.base_url, MEDIC, store) as offline:
            await offline.wait_for("server unreachable: working offline from the local copy")
            await offline.wait_for(r"^\s*\d+\. Admin\s")  # the local copy, listed offline
            await offline.type("/open Admin")
            await offline.wait_for("^--- Admin ---$")
            await offline.type("Written in the basement")
            assert (await offline.wait_for("You: Written in the basement")).endswith("(queued)")
            await offline.wait_for(r"^\[offline, 1 message queued\]$")
            await offline.type("And a second one")
            await offline.wait_for(r"^\[offline, 2 messages queued\]$")
            await offline.quit()

        await srv.up()  # same port and database; a restarted chat delivers what was queued
        async with chat(srv.base_url, MEDIC, store) as back:
            await back.type("/open Admin")
            await back.wait_for("^--- Admin ---$")
            await back.wait_for(r"'And a second one' is now sent|You: And a second one  \(sent\)")
            await back.type("/status")
            await back.wait_for(r"^\[live\]$")
            await back.quit()

        admin = await ApiUser.login(srv.base_url)
        contents = [m["content"] for m in await admin.thread(await admin.conversation_id(MEDIC_NAME))]
        assert contents[-2:] == ["Written in the basement", "And a second one"]
        assert contents.count("Written in the basement") == 1


class Screen:
    """`out` for ChatApp: collects lines and lets a test wait for one."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self._changed.set()

    async def wait_for(self, pattern: str, *, start: int = 0) -> str:
        try:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    self._changed.clear()
                    for line in self.lines[start:]:
                        if re.search(pattern, line):
                            return line
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines)) from None


async def test_chat_app_in_process(tmp_path: Path) -> None:
    async with server(tmp_path) as srv:
        client = await Client.open(srv.base_url, tmp_path / "medic.db")
        screen = Screen()
        app = ChatApp(client, screen)
        follower: asyncio.Task[None] | None = None
        try:
            await client.login(MEDIC, PASSWORD)
            await client.start()
            await app.settle()
            assert client.state is ConnectionState.LIVE

            await app.show_list()
            assert re.search(r"^ 2\. Admin\s+1 unread\s+Yes please", screen.lines[-1]), screen.lines
            assert await app.handle("a message with nowhere to go")
            assert screen.lines[-1] == "open a conversation first (/list, then /open N)"
            await app.handle("/open Nobody")
            assert screen.lines[-1] == "no conversation 'Nobody'; /list shows them"
            await app.handle("/what")
            assert screen.lines[-1] == HELP

            mark = len(screen.lines)
            await app.handle("/open 2")  # by number from the last /list
            assert screen.lines[mark] == "--- Admin ---"
            assert [line.split("] ", 1)[1] for line in screen.lines[mark + 1 :]] == [
                "You: Arrived at site B. Two minor injuries, both treated.  (sent)",
                "Admin: Thanks Maya. Do you need more dressings?",
                "You: Yes please, one box of large dressings.  (sent)",
            ]
            await app.show_list()
            assert re.search(r"^ 2\. Admin\s{2,}Yes please", screen.lines[-1]), "opened: read, no unread count"

            follower = asyncio.create_task(app.follow())
            await screen.wait_for(r"^\[live\]$", start=mark)
            mark = len(screen.lines)
            assert await app.handle("Two more patients")
            assert screen.lines[mark].endswith("You: Two more patients  (queued)")
            await screen.wait_for(r"^  \('Two more patients' is now sent\)$", start=mark)

            admin = await ApiUser.login(srv.base_url)
            await admin.send(await admin.conversation_id(MEDIC_NAME), "Sending a second team")
            await screen.wait_for(r"\] Admin: Sending a second team$", start=mark)
            await admin.send(await admin.conversation_id("Broadcast"), "Storm warning tonight")
            await screen.wait_for(r"^\(new in Broadcast: Storm warning tonight\)$", start=mark)

            await app.handle("/sync")
            assert screen.lines[-1] == "synced"

            # the server goes away: the app says so, queues, and delivers when it is back
            mark = len(screen.lines)
            await srv.down()
            await screen.wait_for(r"^\[offline\]$", start=mark)
            await app.handle("/sync")
            assert screen.lines[-1].startswith("! cannot sync now:")
            await app.handle("Lost signal, writing anyway")
            await screen.wait_for(r"^\[offline, 1 message queued\]$", start=mark)
            await srv.up()
            await screen.wait_for(r"^  \('Lost signal, writing anyway' is now sent\)$", start=mark)
            await screen.wait_for(r"^\[live", start=mark)
            window = screen.lines[mark:]
            assert window.count("[offline]") == 1, f"once, not once per reconnect attempt: {window}"
            assert "[connecting]" not in window

            too_long = "x" * 4001
            await app.handle(too_long)
            assert screen.lines[-1].startswith("! not sent:")
            assert not await app.handle("/quit")
        finally:
            if follower is not None:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
            await client.close()
        contents = [m["content"] for m in await admin.thread(await admin.conversation_id(MEDIC_NAME))]
        assert contents[-3:] == ["Two more patients", "Sending a second team", "Lost signal, writing anyway"]


HOSTILE = "red \x1b[31mALERT\x1b[0m, title \x1b]0;owned\x07, back\rover, bell\x07, csi\x9b2J, \u202eevil\u202c, ok"
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200e\u200f]")


class HostileServerClient:
    """Stands in for `Client`: a local copy whose names, previews and messages came from a hostile server."""

    def __init__(self) -> None:
        self.me = Me("me", "org", "Maya", Role.MEDIC)
        self.state = ConnectionState.LIVE
        self.is_connected = True
        self.conversation = Conversation(
            "c1", ConversationType.DIRECT, "Ad\x1b[2Jmin\u202e", "2026-01-01T10:00:00Z", HOSTILE, 1
        )
        self.messages = [
            Message(
                1,
                "m1",
                "c1",
                "them",
                "Evil\x1b]0;x\x07Name\n",
                f"line one\n{HOSTILE}",
                MessageStatus.SENT,
                "k1",
                "2026-01-01T10:00:00Z",
                1,
            ),
            Message(2, "m2", "c1", "me", "Maya", "mine\x1b[5m", MessageStatus.SENT, "k2", "2026-01-01T10:01:00Z", 2),
        ]

    async def conversations(self) -> list[Conversation]:
        return [self.conversation]

    async def thread(self, conversation_id: str) -> list[Message]:
        return self.messages

    async def mark_read(self, conversation_id: str) -> None:
        return None

    async def outbox_size(self) -> int:
        return 0

    async def send(self, conversation_id: str, content: str) -> None:
        raise SiteCommsError(f"refused: {HOSTILE}")

    async def sync_now(self) -> None:
        raise SiteCommsError("unreachable \x1b[31m")

    async def watch_conversations(self) -> AsyncIterator[list[Conversation]]:
        other = dataclasses.replace(self.conversation, id="c2", name="Broad\x1b[8mcast", unread_count=0)
        yield [self.conversation, other]
        yield [self.conversation, dataclasses.replace(other, unread_count=1, last_message_preview=f"new {HOSTILE}")]

    async def watch_connection(self) -> AsyncIterator[ConnectionState]:
        yield ConnectionState.LIVE


def test_shown_escapes_controls_visibly_and_keeps_text() -> None:
    assert shown("a\x1b[31mb\x07c\rd\x7fe\x9bf") == "a\\x1b[31mb\\x07c\\x0dd\\x7fe\\x9bf"
    assert shown("\u202eevil\u2066x\u2069\u200b\ufeff") == "\\u202eevil\\u2066x\\u2069\\u200b\\ufeff"
    assert shown("one\ntwo\tthree") == "one\\x0atwo\tthree"
    assert shown("one\ntwo", multiline=True) == "one\ntwo"
    assert shown("Tomás Reyes 🚑 – ok") == "Tomás Reyes 🚑 – ok"


async def test_nothing_from_the_server_reaches_the_terminal_raw() -> None:
    fake = HostileServerClient()
    screen = Screen()
    app = ChatApp(cast(Client, fake), screen)
    async with asyncio.timeout(TIMEOUT):
        await app.show_list()
        await app.handle("/open 1")
        await app.handle("a reply")
        await app.handle("/sync")
        fake.messages[1] = dataclasses.replace(fake.messages[1], status=MessageStatus.READ)
        await app.follow()  # the fake's watches end after their few updates
    printed = "\n".join(screen.lines)
    assert not RAW_CONTROL.search(printed), printed
    assert "\\x1b[31mALERT" in printed and "\\x1b]0;owned\\x07" in printed and "\\u202eevil" in printed
    assert "\\x0dover" in printed and "\\x9b2J" in printed
    assert "--- Ad\\x1b[2Jmin\\u202e ---" in screen.lines
    assert any("] Evil\\x1b]0;x\\x07Name\\x0a: line one\nred \\x1b[31m" in line for line in screen.lines), screen.lines
    assert any(line.startswith("(new in Broad\\x1b[8mcast: new red \\x1b[31m") for line in screen.lines)
    assert any(line.startswith("! not sent: refused: red \\x1b[31m") for line in screen.lines)
    assert "! cannot sync now: unreachable \\x1b[31m" in screen.lines


async def test_chat_ends_with_a_clear_line_when_the_session_ends_and_keeps_the_queue(tmp_path: Path) -> None:
    async with server(tmp_path) as srv:
        client = await Client.open(srv.base_url, tmp_path / "medic.db")
        screen = Screen()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        try:
            me = await client.login(MEDIC, PASSWORD)
            await client.start()
            chatting = asyncio.create_task(chat_app.run(client, lines, screen))
            await screen.wait_for(r"^\[live\]$")
            await client.sign_out()  # as when the server ends the session, minus the wait
            await client.send(next(c.id for c in await client.conversations() if c.name == "Admin"), "kept")
            async with asyncio.timeout(TIMEOUT):
                await chatting  # the chat ends by itself
            assert screen.lines[-1] == chat_app.SIGNED_OUT, screen.lines
            assert await client.outbox_size() == 1
            await client.login(MEDIC, PASSWORD)
            assert client.me == me and client.has_session
        finally:
            await client.close()


class SplitArrivalClient:
    """Stands in for `Client`: a new message reaches the local store before its conversation's
    new preview does, as two changes (each one a listing)."""

    def __init__(self) -> None:
        self.me = Me("me", "org", "Maya", Role.MEDIC)
        old = Conversation("b1", ConversationType.BROADCAST, "Broadcast", "2026-01-01T09:00:00Z", "old news", 0)
        counted = dataclasses.replace(old, unread_count=1)
        caught_up = dataclasses.replace(counted, last_message_at="2026-01-01T10:00:00Z", last_message_preview="fresh")
        self.listings = [[old], [counted], [caught_up], [caught_up]]
        self.messages = [
            Message(1, "m1", "b1", "them", "Admin", "fresh", MessageStatus.SENT, "k1", "2026-01-01T10:00:00Z", 7)
        ]

    async def watch_conversations(self) -> AsyncIterator[list[Conversation]]:
        for listing in self.listings:
            yield listing

    async def thread(self, conversation_id: str) -> list[Message]:
        return self.messages


async def test_activity_elsewhere_shows_the_new_preview_once_even_when_the_message_comes_first() -> None:
    lines: list[str] = []
    app = ChatApp(cast(Client, SplitArrivalClient()), lines.append)
    await asyncio.wait_for(app._follow_conversations(), TIMEOUT)
    assert lines == ["(new in Broadcast: fresh)"]
