"""`sitecomms chat`: a terminal client on the offline-first SDK.

Line-oriented, so it works in any terminal (and under tmux or a pipe): it lists conversations
with unread counts, opens a thread, sends what you type, prints messages as they arrive, and
says when it is offline and how many messages wait in the outbox. Everything it shows comes
from the local store, so it keeps working without a network; queued messages go out by
themselves when the server is back. The session renews itself; when the server ends it (signed
out elsewhere, revoked, unused for 30 days) the chat says so and ends, keeping the queue, so
the next `sitecomms chat` asks for the password and then sends what waited.

`ChatApp` is the whole client minus the terminal: feed it lines with `handle()`, run
`follow()` for live output, and read what it printed through `out`.

Text that comes from the server (names, previews, messages, error messages) is printed through
`shown()`: a terminal obeys control characters and bidirectional overrides, so another user's
message could otherwise recolour the screen, retitle the window or hide text. They are printed
as visible escapes instead (ESC as `\x1b`, U+202E as `\u202e`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import unicodedata
from collections.abc import Callable

from sitecomms.client import Client, ConnectionState, Conversation, Message, SiteCommsError

HELP = "commands: /list, /open N (or a name), /sync, /status, /reconnect, /help, /quit; anything else is sent"

SIGNED_OUT = (
    "! the session has ended (signed out elsewhere, revoked, or unused too long): run `sitecomms chat`"
    " again to sign in; queued messages are kept and go out then"
)

# Format characters that reorder or hide text: bidi embeddings, overrides, isolates and marks,
# zero-width characters, invisible operators, the byte-order mark.
_HIDDEN = frozenset(
    "\u061c\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
)


def _unsafe(char: str) -> bool:
    """A character a terminal obeys or that hides text: controls, line separators, _HIDDEN, tags."""
    return unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _HIDDEN or "\U000e0000" <= char <= "\U000e007f"


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def shown(text: str, *, multiline: bool = False) -> str:
    """`text` safe to print on a terminal: every unsafe character (control characters but tab,
    and new line with `multiline`; bidi and invisible format characters) shown as an escape."""
    kept = "\n\t" if multiline else "\t"
    return "".join(_escaped(char) if char not in kept and _unsafe(char) else char for char in text)


class ChatApp:
    def __init__(self, client: Client, out: Callable[[str], None]) -> None:
        self.client = client
        self.out = out
        self.open: Conversation | None = None
        self._shown: dict[int, str] = {}  # local id -> status already printed
        self._listing: list[Conversation] = []
        self._unread: dict[str, int] = {}
        self._pending: dict[str, str] = {}  # conversation id -> created_at its preview must reach

    # --- commands --------------------------------------------------------------------------

    async def handle(self, line: str) -> bool:
        """One line typed by the user; False when they asked to quit."""
        text = line.rstrip("\n")
        if not text.strip():
            return True
        if text.startswith("/"):
            command, _, arg = text[1:].partition(" ")
            if command in ("quit", "q", "exit"):
                return False
            if command == "list":
                await self.show_list()
            elif command == "open":
                await self.open_conversation(arg.strip())
            elif command == "sync":
                await self.sync()
            elif command == "status":
                await self.show_status()
            elif command == "reconnect":
                self.client.reconnect()
            else:
                self.out(HELP)
            return True
        if self.open is None:
            self.out("open a conversation first (/list, then /open N)")
            return True
        try:
            await self.client.send(self.open.id, text)
        except SiteCommsError as exc:
            self.out(f"! not sent: {shown(str(exc))}")
            return True
        await self._print_new_messages()
        if not self.client.is_connected:
            await self.show_status()
        return True

    async def show_list(self) -> None:
        self._listing = await self.client.conversations()
        if not self._listing:
            self.out("no conversations yet (offline and never synced?)")
        for number, conversation in enumerate(self._listing, 1):
            unread = f"{conversation.unread_count} unread" if conversation.unread_count else ""
            preview = shown(conversation.last_message_preview or "")
            self.out(f"{number:>2}. {shown(conversation.name):<24} {unread:<10} {preview[:50]}")

    async def open_conversation(self, which: str) -> None:
        listing = self._listing or await self.client.conversations()
        chosen: Conversation | None = None
        if which.isdigit() and 1 <= int(which) <= len(listing):
            chosen = listing[int(which) - 1]
        else:
            chosen = next((c for c in listing if c.name.lower() == which.lower()), None)
        if chosen is None:
            self.out(f"no conversation {which!r}; /list shows them")
            return
        self.open = chosen
        self._shown.clear()
        self.out(f"--- {shown(chosen.name)} ---")
        await self._print_new_messages()
        await self.client.mark_read(chosen.id)

    async def sync(self) -> None:
        try:
            await self.client.sync_now()
            self.out("synced")
        except SiteCommsError as exc:
            self.out(f"! cannot sync now: {shown(str(exc))}")

    async def show_status(self) -> None:
        self.out(await self.status_line())

    async def status_line(self) -> str:
        queued = await self.client.outbox_size()
        state = self.client.state
        waiting = f", {queued} message{'s' if queued != 1 else ''} queued" if queued else ""
        label = "live" if state is ConnectionState.LIVE else state.value
        if state is ConnectionState.SIGNED_OUT:
            label = "signed out"
            waiting = f", {queued} queued message{'s' if queued != 1 else ''} kept" if queued else ""
        elif state is ConnectionState.TOO_MANY_SOCKETS:
            label = "live updates stopped: too many connections for this user (/reconnect resumes them)"
        return f"[{label}{waiting}]"

    async def settle(self, patience: float = 10.0) -> None:
        """Wait (bounded) for the first connection attempt to end, so the first list is current."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(patience):
                tried = False
                async for state in self.client.watch_connection():
                    if state in (
                        ConnectionState.LIVE,
                        ConnectionState.SIGNED_OUT,
                        ConnectionState.TOO_MANY_SOCKETS,
                    ) or (tried and state is ConnectionState.OFFLINE):
                        return
                    tried = tried or state is ConnectionState.CONNECTING

    # --- live output -----------------------------------------------------------------------

    async def follow(self) -> None:
        """Print connection changes, new messages in the open thread, and activity elsewhere."""
        await asyncio.gather(self._follow_connection(), self._follow_conversations())

    async def _follow_connection(self) -> None:
        """Print the status when it changes; not once per reconnect attempt while offline."""
        shown: str | None = None
        async for state in self.client.watch_connection():
            if state is ConnectionState.CONNECTING:
                continue
            line = await self.status_line()
            if line != shown:
                self.out(line)
                shown = line

    async def _follow_conversations(self) -> None:
        async for listing in self.client.watch_conversations():
            for conversation in listing:
                before = self._unread.get(conversation.id)
                self._unread[conversation.id] = conversation.unread_count
                is_open = self.open is not None and conversation.id == self.open.id
                if is_open:
                    self._pending.pop(conversation.id, None)
                elif before is not None and conversation.unread_count > before:
                    self._pending[conversation.id] = await self._newest_from_others(conversation.id)
                # The message and its conversation's new preview are two changes: print once the
                # preview has caught up with the message that raised the count, not before.
                waited = self._pending.get(conversation.id)
                if waited is not None and (conversation.last_message_at or "") >= waited:
                    del self._pending[conversation.id]
                    preview = shown(conversation.last_message_preview or "")
                    self.out(f"(new in {shown(conversation.name)}: {preview})")
            if self.open is not None:
                await self._print_new_messages()

    async def _newest_from_others(self, conversation_id: str) -> str:
        """When the newest message someone else sent in the conversation was created ("" if none)."""
        me = self.client.me
        thread = await self.client.thread(conversation_id)
        theirs = [message for message in thread if me is None or message.sender_id != me.user_id]
        return theirs[-1].created_at if theirs else ""

    async def _print_new_messages(self) -> None:
        if self.open is None:
            return
        me = self.client.me
        fresh = False
        for message in await self.client.thread(self.open.id):
            if self._shown.get(message.local_id) == message.status:
                continue
            if message.local_id not in self._shown:
                fresh = fresh or (me is None or message.sender_id != me.user_id)
                self.out(self._format(message))
            elif message.sender_id == (me.user_id if me else ""):
                self.out(f"  ({message.content[:30]!r} is now {message.status})")
            self._shown[message.local_id] = message.status
        if fresh:
            await self.client.mark_read(self.open.id)

    def _format(self, message: Message) -> str:
        me = self.client.me
        mine = me is not None and message.sender_id == me.user_id
        who = "You" if mine else shown(message.sender_name)
        clock = shown(message.created_at[11:16]) if len(message.created_at) >= 16 else "--:--"
        status = f"  ({message.status})" if mine else ""
        return f"[{clock}] {who}: {shown(message.content, multiline=True)}{status}"


async def run(client: Client, lines: asyncio.Queue[str | None], out: Callable[[str], None]) -> None:
    """The chat loop: follow live output while handling lines until /quit, end of input, or the
    end of the session (then it says how to sign in again)."""
    app = ChatApp(client, out)
    out(HELP)
    await app.settle()
    await app.show_list()
    follower = asyncio.create_task(app.follow())
    typing = asyncio.create_task(_handle_lines(app, lines))
    signed_out = asyncio.create_task(_until_signed_out(client))
    try:
        await asyncio.wait({typing, signed_out}, return_when=asyncio.FIRST_COMPLETED)
        if typing.done():
            typing.result()
        else:
            out(SIGNED_OUT)
    finally:
        for task in (follower, typing, signed_out):
            task.cancel()
        await asyncio.gather(follower, typing, signed_out, return_exceptions=True)


async def _handle_lines(app: ChatApp, lines: asyncio.Queue[str | None]) -> None:
    while (line := await lines.get()) is not None and await app.handle(line):
        pass


async def _until_signed_out(client: Client) -> None:
    async for state in client.watch_connection():
        if state is ConnectionState.SIGNED_OUT:
            return


async def stdin_lines(queue: asyncio.Queue[str | None]) -> None:
    """Feed stdin's lines (then None at its end) to `queue` from a daemon thread.

    A daemon thread, not the loop's executor: a `readline` blocked at /quit must not keep the
    process alive.
    """
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def finish() -> None:
        queue.put_nowait(None)
        if not done.done():
            done.set_result(None)

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(finish)

    threading.Thread(target=pump, name="sitecomms-chat-stdin", daemon=True).start()
    await done
