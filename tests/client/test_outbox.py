"""The outbox against real servers: messages written offline survive a client restart and a
SIGKILL part-way through delivery, and reach the server exactly once, in the order written."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from sitecomms.client import Client
from tests.client.harness import (
    CLIENT_SCRIPT,
    MEDIC,
    PASSWORD,
    TIMEOUT,
    ApiUser,
    Server,
    run_client,
    server,
)


def result_of(output: str) -> Any:
    line = next(line for line in output.splitlines() if line.startswith("result "))
    return orjson.loads(line.removeprefix("result "))


async def signed_in_store(srv: Server, store: Path) -> None:
    """The first sign-in needs the server: a client process logs in once and pulls."""
    login = result_of(await run_client("login", srv.base_url, str(store), MEDIC, PASSWORD))
    assert login["me"]["display_name"] == "Maya Lindqvist"
    assert "Admin" in login["conversations"]


async def medic_thread_on_server(base_url: str) -> list[dict[str, Any]]:
    admin = await ApiUser.login(base_url)
    return await admin.thread(await admin.conversation_id("Maya Lindqvist"))


async def test_messages_sent_offline_reach_the_server_once_after_a_client_restart(tmp_path: Path) -> None:
    store = tmp_path / "medic.db"
    async with server(tmp_path) as first:
        await signed_in_store(first, store)
        await first.down()

        # offline: a client process writes three messages and exits
        queued = result_of(await run_client("enqueue", first.base_url, str(store), "Admin", "offline", "3"))
        assert [(m["content"], m["status"], m["id"]) for m in queued] == [
            (f"offline {i}", "queued", None) for i in range(3)
        ]

        # the server comes back on the same database at another address; a new client process delivers
        second = Server(first.env, tmp_path)
        try:
            await second.up()
            output = await run_client("deliver", second.base_url, str(store))
            progress = [int(line.split()[1]) for line in output.splitlines() if line.startswith("outbox ")]
            assert progress[0] == 3, f"the restarted client should find all three still queued:\n{output}"
            local = [m for m in result_of(output) if m["content"].startswith("offline ")]
            on_server = [m for m in await medic_thread_on_server(second.base_url) if m["content"].startswith("offline")]
        finally:
            await second.down()

    assert [m["content"] for m in on_server] == ["offline 0", "offline 1", "offline 2"], "once each, in order"
    assert [m["idempotency_key"] for m in on_server] == [m["idempotency_key"] for m in queued]
    assert [(m["content"], m["status"]) for m in local] == [(f"offline {i}", "sent") for i in range(3)]
    assert [m["id"] for m in local] == [m["id"] for m in on_server]
    assert [m["position"] for m in local] == [m["position"] for m in on_server]


async def test_sigkill_part_way_through_delivery_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    store = tmp_path / "medic.db"
    total = 100
    async with server(tmp_path) as srv:
        await signed_in_store(srv, store)
        await srv.down()
        queued = result_of(await run_client("enqueue", srv.base_url, str(store), "Admin", "push", str(total)))
        assert len(queued) == total and {m["status"] for m in queued} == {"queued"}
        await srv.up()

        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CLIENT_SCRIPT),
            "deliver",
            srv.base_url,
            str(store),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert process.stdout is not None
        seen: list[str] = []
        try:
            async with asyncio.timeout(TIMEOUT):  # until the client reports 20+ delivered
                while True:
                    line = (await process.stdout.readline()).decode()
                    assert line, f"the client exited before it was killed:\n{''.join(seen)}"
                    seen.append(line)
                    if line.startswith("outbox ") and int(line.split()[1]) <= total - 20:
                        break
            process.send_signal(signal.SIGKILL)
        finally:
            if process.returncode is None:
                process.kill()
            await asyncio.wait_for(process.wait(), TIMEOUT)
        assert process.returncode == -signal.SIGKILL

        held = [m for m in await medic_thread_on_server(srv.base_url) if m["content"].startswith("push ")]
        assert 20 <= len(held) < total, f"the kill should land part-way, the server has {len(held)}"

        output = await run_client("deliver", srv.base_url, str(store))
        on_server = [m for m in await medic_thread_on_server(srv.base_url) if m["content"].startswith("push ")]

    local = [m for m in result_of(output) if m["content"].startswith("push ")]
    assert [m["content"] for m in on_server] == [f"push {i}" for i in range(total)], "exactly once each, in order"
    assert len({m["id"] for m in on_server}) == total
    assert [(m["content"], m["status"]) for m in local] == [(f"push {i}", "sent") for i in range(total)]
    assert [m["id"] for m in local] == [m["id"] for m in on_server]


async def test_a_message_the_server_committed_before_the_client_died_is_recorded_not_resent(tmp_path: Path) -> None:
    """The crash window itself: the server has the message but the client never saw the answer."""
    async with server(tmp_path) as srv:
        client = await Client.open(srv.base_url, tmp_path / "medic.db")
        try:
            await client.login(MEDIC, PASSWORD)
            await client.sync_now()
            conversation = next(c for c in await client.conversations() if c.name == "Admin")
            queued = await client.send(conversation.id, "committed, answer lost")
            # what the dead process's request did: the same message, the same key, committed
            medic = await ApiUser.login(srv.base_url, MEDIC)
            committed = await medic.send(conversation.id, "committed, answer lost", key=queued.idempotency_key)

            await client.start()
            async with asyncio.timeout(TIMEOUT):
                async for thread in client.watch_thread(conversation.id):
                    mine = [m for m in thread if m.local_id == queued.local_id]
                    if mine and mine[0].status != "queued":
                        break
            assert await client.outbox_size() == 0
            [row] = [m for m in await client.thread(conversation.id) if m.content == "committed, answer lost"]
            assert (row.local_id, row.id, row.status, row.position) == (
                queued.local_id,
                committed["id"],
                "sent",
                committed["position"],
            )
        finally:
            await client.close()
        copies = [m for m in await medic_thread_on_server(srv.base_url) if m["content"] == "committed, answer lost"]
        assert [m["id"] for m in copies] == [committed["id"]]
