"""A client in its own process, for restart and SIGKILL tests (run with the test's interpreter).

    client_process.py login   URL STORE EMAIL PASSWORD   sign in, pull sync, exit
    client_process.py enqueue URL STORE CONVERSATION PREFIX N
                                                        send N messages without ever starting
                                                        the client (they stay queued), exit
    client_process.py deliver URL STORE                 start, print `outbox N` after each local
                                                        change, exit once the outbox is empty

Each command ends by printing one line `result <json>`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys

import orjson

from sitecomms.client import Client

DELIVER_TIMEOUT = 60.0


def emit(line: str) -> None:
    print(line, flush=True)


async def login(url: str, store: str, email: str, password: str) -> None:
    async with await Client.open(url, store) as client:
        me = await client.login(email, password)
        await client.sync_now()
        names = [c.name for c in await client.conversations()]
        emit("result " + orjson.dumps({"me": dataclasses.asdict(me), "conversations": names}).decode())


async def enqueue(url: str, store: str, conversation: str, prefix: str, count: int) -> None:
    async with await Client.open(url, store) as client:
        target = next(c for c in await client.conversations() if c.name == conversation)
        sent = [await client.send(target.id, f"{prefix} {i}") for i in range(count)]
        emit("result " + orjson.dumps([dataclasses.asdict(m) for m in sent]).decode())


async def deliver(url: str, store: str) -> None:
    async with await Client.open(url, store) as client:
        await client.start()
        async with asyncio.timeout(DELIVER_TIMEOUT):
            async for _ in client.watch_conversations():
                size = await client.outbox_size()
                emit(f"outbox {size}")
                if size == 0:
                    break
        mine = [
            dataclasses.asdict(m)
            for c in await client.conversations()
            for m in await client.thread(c.id, 10_000)
            if client.me is not None and m.sender_id == client.me.user_id
        ]
        emit("result " + orjson.dumps(mine).decode())


def main(argv: list[str]) -> None:
    command, url, store, *rest = argv
    if command == "login":
        asyncio.run(login(url, store, rest[0], rest[1]))
    elif command == "enqueue":
        asyncio.run(enqueue(url, store, rest[0], rest[1], int(rest[2])))
    elif command == "deliver":
        asyncio.run(deliver(url, store))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
