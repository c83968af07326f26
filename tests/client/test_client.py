"""`Client` against real `sitecomms serve` processes: two users converse live, observers fire,
unread counts agree with the server, a client catches up after being away, and one whose server
restarts reconnects and resumes from its cursor."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from sitecomms.client import Client, ConnectionState, Conversation
from tests.client.harness import ADMIN, MEDIC, MEDIC_NAME, PASSWORD, TIMEOUT, ApiUser, server

T = TypeVar("T")


async def until(updates: AsyncIterator[T], predicate: Callable[[T], bool], what: str, within: float = TIMEOUT) -> T:
    """The first value an observer yields that satisfies `predicate` (bounded)."""
    seen: list[T] = []
    try:
        async with asyncio.timeout(within):
            async for value in updates:
                if predicate(value):
                    return value
                seen.append(value)
    except TimeoutError:
        last = repr(seen[-1])[:1500] if seen else "nothing"
        raise AssertionError(f"no update with {what} within {within:.0f} s; last seen: {last}") from None
    raise AssertionError("the observer ended")


async def live(client: Client) -> None:
    await until(client.watch_connection(), lambda state: state is ConnectionState.LIVE, "state LIVE")


@contextlib.asynccontextmanager
async def started(base_url: str, store: Path, email: str) -> AsyncIterator[Client]:
    client = await Client.open(base_url, store)
    try:
        if client.me is None:
            await client.login(email, PASSWORD)
        await client.start()
        await live(client)
        yield client
    finally:
        await client.close()


async def closing(*observers: AsyncIterator[Any]) -> None:
    """End observers (async generators underneath) so they unregister at once."""
    for observer in observers:
        await cast(AsyncGenerator[Any, None], observer).aclose()


def by_name(conversations: list[Conversation], name: str) -> Conversation:
    return next(c for c in conversations if c.name == name)


async def unread_on_server(base_url: str, email: str) -> dict[str, int]:
    user = await ApiUser.login(base_url, email)
    return {c["id"]: c["unread_count"] for c in await user.conversations()}


async def unread_locally(client: Client) -> dict[str, int]:
    return {c.id: c.unread_count for c in await client.conversations()}


async def test_a_medic_and_an_admin_converse_live(tmp_path: Path) -> None:
    async with (
        server(tmp_path) as srv,
        started(srv.base_url, tmp_path / "medic.db", MEDIC) as medic,
        started(srv.base_url, tmp_path / "admin.db", ADMIN) as admin,
    ):
        conversation = by_name(await medic.conversations(), "Admin")
        assert by_name(await admin.conversations(), MEDIC_NAME).id == conversation.id
        assert await unread_locally(medic) == await unread_on_server(srv.base_url, MEDIC)
        assert await unread_locally(admin) == await unread_on_server(srv.base_url, ADMIN)
        admin_unread_before = await admin.unread_total()
        admin_unread_elsewhere = admin_unread_before - by_name(await admin.conversations(), MEDIC_NAME).unread_count

        # observers opened before anything happens; each yields the current state first
        medic_thread = medic.watch_thread(conversation.id)
        admin_thread = admin.watch_thread(conversation.id)
        admin_list = admin.watch_conversations()
        admin_unread = admin.watch_unread_total()
        assert [m.content for m in await anext(admin_thread)] == [
            m.content for m in await medic.thread(conversation.id)
        ]
        assert await anext(admin_unread) == admin_unread_before

        sent = await medic.send(conversation.id, "Need more dressings at site B")
        assert sent.status == "queued" and sent.id is None
        mine = await until(
            medic_thread,
            lambda thread: any(m.local_id == sent.local_id and m.status == "sent" for m in thread),
            "the medic's message sent",
        )
        delivered = next(m for m in mine if m.local_id == sent.local_id)
        assert delivered.id is not None and delivered.position is not None

        arrived = await until(
            admin_thread, lambda thread: any(m.id == delivered.id for m in thread), "the message at the admin"
        )
        received = next(m for m in arrived if m.id == delivered.id)
        assert (received.content, received.sender_name, received.status) == (
            "Need more dressings at site B",
            MEDIC_NAME,
            "sent",
        )
        assert arrived[-1].id == delivered.id, "newest last"
        listing = await until(
            admin_list,
            lambda cs: by_name(cs, MEDIC_NAME).last_message_preview == "Need more dressings at site B",
            "the preview at the admin",
        )
        assert listing[0].name == MEDIC_NAME, "most recent activity first"
        assert await until(admin_unread, lambda n: n == admin_unread_before + 1, "one more unread") == (
            admin_unread_before + 1
        )

        # the admin answers
        reply = await admin.send(conversation.id, "Dressings on the next truck")
        got = await until(
            medic_thread,
            lambda thread: any(m.content == "Dressings on the next truck" and m.id for m in thread),
            "the reply at the medic",
        )
        answer = next(m for m in got if m.content == "Dressings on the next truck")
        assert answer.sender_name == "Admin" and answer.idempotency_key == reply.idempotency_key
        await until(admin_thread, lambda t: any(m.id == answer.id and m.status == "sent" for m in t), "reply sent")

        # both sides agree with the server, message for message and count for count
        assert await unread_locally(medic) == await unread_on_server(srv.base_url, MEDIC)
        assert by_name(await medic.conversations(), "Admin").unread_count >= 1
        assert await unread_locally(admin) == await unread_on_server(srv.base_url, ADMIN)
        server_thread = await (await ApiUser.login(srv.base_url)).thread(conversation.id)
        for client in (medic, admin):
            local = await client.thread(conversation.id)
            assert [(m.id, m.content, m.position) for m in local] == [
                (m["id"], m["content"], m["position"]) for m in server_thread
            ]

        # reading: at once locally, then pushed to the server, which tells the other side (a receipt)
        await medic.mark_read(conversation.id)
        assert by_name(await medic.conversations(), "Admin").unread_count == 0
        await until(
            admin_thread, lambda t: any(m.id == answer.id and m.status == "read" for m in t), "the read receipt"
        )
        assert (await unread_on_server(srv.base_url, MEDIC))[conversation.id] == 0
        assert await unread_locally(medic) == await unread_on_server(srv.base_url, MEDIC)

        await admin.mark_read(conversation.id)
        assert await until(admin_unread, lambda n: n == admin_unread_elsewhere, "the admin's count down") == (
            admin_unread_elsewhere
        )
        await until(
            medic_thread, lambda t: any(m.id == delivered.id and m.status == "read" for m in t), "the admin's receipt"
        )
        assert (await unread_on_server(srv.base_url, ADMIN))[conversation.id] == 0
        assert await unread_locally(admin) == await unread_on_server(srv.base_url, ADMIN)

        await closing(medic_thread, admin_thread, admin_list, admin_unread)


async def test_every_connection_watcher_sees_each_change(tmp_path: Path) -> None:
    """Several UIs may watch the connection at once; none may miss a change another consumed."""
    async with server(tmp_path) as srv:
        client = await Client.open(srv.base_url, tmp_path / "medic.db")
        try:
            await client.login(MEDIC, PASSWORD)
            slow = client.watch_connection()
            fast = client.watch_connection()
            assert await anext(slow) is ConnectionState.OFFLINE
            await client.start()
            # `fast` follows every change while `slow` is busy elsewhere
            await until(fast, lambda state: state is ConnectionState.LIVE, "LIVE for the fast watcher")
            # `slow` comes back: it must report the change it has not seen yet, not wait for another one
            async with asyncio.timeout(TIMEOUT):
                assert await anext(slow) is ConnectionState.LIVE
            await srv.down()
            for watcher in (fast, slow):
                await until(watcher, lambda state: state is not ConnectionState.LIVE, "the server gone")
            await closing(fast, slow)
        finally:
            await client.close()


async def test_a_client_away_while_1000_messages_arrive_catches_up_exactly(tmp_path: Path) -> None:
    async with server(tmp_path) as srv:
        store = tmp_path / "medic.db"
        async with started(srv.base_url, store, MEDIC) as medic:
            conversation = by_name(await medic.conversations(), "Admin")
            broadcast = by_name(await medic.conversations(), "Broadcast")

        # away: the admins write 1,000 messages (some to every medic) with the client closed
        admin = await ApiUser.login(srv.base_url)
        batch = [(broadcast.id if i % 20 == 0 else conversation.id, f"message {i}") for i in range(1000)]
        async with asyncio.timeout(120):
            sent = await admin.send_many(batch)
        assert len({m["id"] for m in sent}) == 1000

        async with started(srv.base_url, store, MEDIC) as medic:
            listing = {c["id"]: c for c in await (await ApiUser.login(srv.base_url, MEDIC)).conversations()}
            local = {c.id: c for c in await medic.conversations()}
            assert set(local) == set(listing)
            for cid, theirs in listing.items():
                ours = local[cid]
                assert (ours.name, ours.last_message_preview, ours.unread_count) == (
                    theirs["name"],
                    theirs["last_message_preview"],
                    theirs["unread_count"],
                ), cid
                assert ours.last_message_at is not None and theirs["last_message_at"] is not None
                server_thread = await admin.thread(cid)
                local_thread = await medic.thread(cid, 10_000)
                assert [(m.id, m.content, m.position, m.sender_name) for m in local_thread] == [
                    (m["id"], m["content"], m["position"], "Admin" if m["sender_role"] == "admin" else MEDIC_NAME)
                    for m in server_thread
                ], cid
            assert local[conversation.id].unread_count >= 950
            positions = [m.position or 0 for m in await medic.thread(conversation.id, 10_000)]
            assert positions == sorted(set(positions)) and len(positions) == 950 + 3  # 3 from the demo
            assert await medic.unread_total() == sum(c["unread_count"] for c in listing.values())

        # a new device (a fresh store) holds only the newest messages of each conversation after
        # its first sync, and still shows the server's unread counts
        async with started(srv.base_url, tmp_path / "medic-new-device.db", MEDIC) as fresh:
            assert len(await fresh.thread(conversation.id, 10_000)) < 950
            assert await unread_locally(fresh) == {cid: c["unread_count"] for cid, c in listing.items()}
            await fresh.mark_read(conversation.id)
            assert by_name(await fresh.conversations(), "Admin").unread_count == 0


async def test_a_client_whose_server_restarts_reconnects_and_resumes(tmp_path: Path) -> None:
    async with server(tmp_path) as srv, started(srv.base_url, tmp_path / "medic.db", MEDIC) as medic:
        conversation = by_name(await medic.conversations(), "Admin")
        states = medic.watch_connection()
        assert await anext(states) is ConnectionState.LIVE
        thread = medic.watch_thread(conversation.id)

        await srv.down()
        await until(states, lambda state: state is ConnectionState.OFFLINE, "OFFLINE")
        queued = await medic.send(conversation.id, "written while the server was down")
        assert queued.status == "queued"
        assert by_name(await medic.conversations(), "Admin").unread_count == 1  # the demo's admin message
        await medic.mark_read(conversation.id)  # offline: at once here, on the server once it is back
        assert by_name(await medic.conversations(), "Admin").unread_count == 0

        await srv.up()  # the same port, the same database
        admin = await ApiUser.login(srv.base_url)
        early = await admin.send(conversation.id, "sent before the client is back")  # replayed or synced
        await until(states, lambda state: state is ConnectionState.LIVE, "LIVE again")
        late = await admin.send(conversation.id, "sent after the client is back")  # live
        latest = await until(
            thread,
            lambda t: (
                {early["id"], late["id"]} <= {m.id for m in t}
                and any(m.local_id == queued.local_id and m.status == "sent" for m in t)
            ),
            "both admin messages and the queued one sent",
        )
        server_thread = await admin.thread(conversation.id)
        assert [m.id for m in latest] == [m["id"] for m in server_thread][-len(latest) :]
        assert [m["content"] for m in server_thread].count("written while the server was down") == 1

        # the read mark made offline reached the server: it counts only the two messages after it
        assert by_name(await medic.conversations(), "Admin").unread_count == 2
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while (await unread_on_server(srv.base_url, MEDIC))[conversation.id] != 2:  # no event to await
            assert asyncio.get_running_loop().time() < deadline, "the offline read mark never reached the server"
            await asyncio.sleep(0.1)
        await closing(states, thread)
