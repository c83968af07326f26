"""A terminal chat on the realtime channel, in one small file (the SDK of a later issue does more).

    python examples/live_chat.py --email medic1@demo.example
    python examples/live_chat.py --email admin@demo.example --to "Maya Lindqvist"

Prints every message you may see as it arrives, and sends each line you type: a medic to the
admins, an admin to the medic named by --to (or to everyone with --to Broadcast). Start two, on
the same server or on two server processes sharing a database and a bus, and watch messages
arrive live both ways. On a dropped connection it reconnects (with the protocol's backoff) and
resumes from its cursor. The wire's names (frame types, close codes) come from `sitecomms.protocol`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sitecomms.protocol.backoff import RECONNECT
from sitecomms.protocol.enums import ChangeType
from sitecomms.protocol.frames import ClientFrame, CloseCode, ServerFrame


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8000")
    parser.add_argument("--email", required=True)
    parser.add_argument("--password", default="demo-password")
    parser.add_argument("--to", help="admins: the medic (or Broadcast) to write to")
    args = parser.parse_args()

    async with httpx.AsyncClient(base_url=args.server, timeout=10) as http:
        login = await http.post("/v1/auth/login", json={"email": args.email, "password": args.password})
        login.raise_for_status()
        token = login.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        conversations = (await http.get("/v1/conversations", headers=headers)).json()["conversations"]
        wanted = args.to or "Admin"
        target = next((c for c in conversations if c["name"] == wanted), None)
        if target is None:
            sys.exit(f"no conversation named {wanted!r}: {[c['name'] for c in conversations]}")
        cursor = (await http.get("/v1/sync", headers=headers)).json()["next_cursor"]
        print(f"signed in as {login.json()['user']['display_name']}; writing to {target['name']}", flush=True)

        async def send_lines() -> None:
            loop = asyncio.get_running_loop()
            while line := await loop.run_in_executor(None, sys.stdin.readline):
                if line.strip():
                    body = {
                        "conversation_id": target["id"],
                        "content": line.rstrip("\n"),
                        "idempotency_key": str(uuid.uuid4()),
                    }
                    (await http.post("/v1/messages", json=body, headers=headers)).raise_for_status()

        def show(message: dict[str, str]) -> None:
            print(f"[{time.strftime('%H:%M:%S')}] {message['sender_name']}: {message['content']}", flush=True)

        async def catch_up() -> None:
            """After a 4409 (resync required): pull what was missed through GET /v1/sync."""
            nonlocal cursor
            while True:
                page = (await http.get("/v1/sync", params={"cursor": cursor}, headers=headers)).json()
                if "error" in page:  # the cursor itself is no good: start from a fresh snapshot
                    cursor = (await http.get("/v1/sync", headers=headers)).json()["next_cursor"]
                    return
                for change in page["changes"]:
                    if change["type"] == ChangeType.MESSAGE_CREATED:
                        show(change["data"])
                cursor = page["next_cursor"]
                if not page["has_more"]:
                    return

        async def receive() -> None:
            nonlocal cursor
            ws_url = args.server.replace("http", "ws", 1) + "/v1/realtime"
            failures = 0
            while True:
                try:
                    async with connect(ws_url) as ws:
                        await ws.send(json.dumps({"type": ClientFrame.HELLO, "token": token, "cursor": cursor}))
                        async for raw in ws:
                            frame = json.loads(raw)
                            if frame["type"] == ServerFrame.PING:
                                await ws.send(json.dumps({"type": ClientFrame.PONG}))
                            elif frame["type"] == ServerFrame.LIVE:
                                failures = 0
                            elif frame["type"] == ChangeType.MESSAGE_CREATED:
                                show(frame["data"])
                            cursor = frame.get("cursor", cursor)
                except ConnectionClosed as exc:
                    if exc.rcvd is not None and exc.rcvd.code == CloseCode.RESYNC_REQUIRED:
                        await catch_up()
                        continue
                    print(f"(connection lost: {exc}; reconnecting)", flush=True)
                except OSError as exc:
                    print(f"(server unreachable: {exc}; retrying)", flush=True)
                await asyncio.sleep(RECONNECT.delay(failures))
                failures += 1

        receiver = asyncio.create_task(receive())
        await send_lines()
        receiver.cancel()


if __name__ == "__main__":
    asyncio.run(main())
