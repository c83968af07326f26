"""The unmodified supabase-js (2.109.0, and 2.49.4 whose realtime defaults to vsn 1.0.0) against
a real `sitecomms serve`, under Node 20: sign-in through the GoTrue endpoints, the original
app's channel (INSERT on messages and UPDATE on conversation_read_status, `org_id=eq.<org>`),
visibility, the anon-only refusal, token refresh, a restart with and without the resume option,
and sign-out closing the channel. The scenario itself is tests/compat/supabase_scenario.mjs;
this test makes the orgs, starts and restarts the server, and writes the messages that are
sent while the server is down (straight through the services, as the CLI would).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from sitecomms.server.app import build_accounts, build_signin
from sitecomms.server.services.messaging import Messaging
from sitecomms.server.services.publisher import NoPublisher
from sitecomms.store.database import Database, open_database
from tests.servers import READY_TIMEOUT, Served, aserving, base_env, start
from tests.support import PASSWORD, Member, Orgs, World, fast_settings

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("supabase_scenario.mjs")
NODE = shutil.which("node")
RUN_TIMEOUT = 150.0
LINE_TIMEOUT = 60.0


def _who(member: Member, **extra: Any) -> dict[str, Any]:
    return {
        "id": member.id,
        "email": member.email,
        "org_id": member.org_id,
        "display_name": member.display_name,
        "conversation_id": member.conversation_id,
        **extra,
    }


@pytest.mark.parametrize("package", ["@supabase/supabase-js", "supabase-js-2.49"])
async def test_supabase_js_scenario(package: str, tmp_path: Path) -> None:
    assert NODE is not None, "Node 20 is required for the compatibility tests (scripts/install --dev)"
    assert (ROOT / "node_modules" / package).is_dir(), "run `npm ci` (scripts/install --dev)"
    database_url = f"sqlite:///{tmp_path / 'sitecomms.db'}"
    env = base_env(database_url)
    async with aserving(env, tmp_path / "serve-1.log") as served:
        db = open_database(database_url, pool_size=2)
        try:
            async with httpx.AsyncClient(base_url=served.base_url, timeout=10.0, trust_env=False) as http:
                settings = fast_settings(database_url)
                orgs = Orgs(
                    build_accounts(settings, db, NoPublisher()), build_signin(settings, db, NoPublisher()), http
                )
                world = await asyncio.wait_for(orgs.make(admins=1, medics=2), 60)
                elsewhere = await asyncio.wait_for(orgs.make(admins=1, medics=0), 60)
            scenario = {
                "pkg": package,
                "url": served.base_url,
                "anon": "anon-key-not-a-jwt",
                "password": PASSWORD,
                "org_id": world.org_id,
                "broadcast_id": world.broadcast_id,
                "medic": _who(world.medics[0]),
                "medicB": _who(world.medics[1]),
                "admin": _who(world.admins[0]),
                "other": _who(elsewhere.admins[0], broadcast_id=elsewhere.broadcast_id),
            }
            node = await asyncio.create_subprocess_exec(
                str(NODE),
                str(SCRIPT),
                cwd=ROOT,
                env={**os.environ, "SCENARIO": orjson.dumps(scenario).decode()},
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            assert node.stdin is not None and node.stdout is not None
            said: list[Any] = []
            current = served
            try:
                async with asyncio.timeout(RUN_TIMEOUT):
                    while True:
                        line = await asyncio.wait_for(node.stdout.readline(), LINE_TIMEOUT)
                        if not line:
                            break
                        try:
                            said.append(orjson.loads(line))
                        except orjson.JSONDecodeError:
                            said.append(line.decode(errors="replace"))  # a client's own log line
                            continue
                        if isinstance(said[-1], dict) and said[-1].get("need") == "restart":
                            current = await _restart(current, env, tmp_path, db, world)
                            node.stdin.write(b"restarted\n")
                            await node.stdin.drain()
                    await node.wait()
            finally:
                if node.returncode is None:
                    node.kill()
                    await node.wait()
                if current is not served:
                    await asyncio.wait_for(asyncio.to_thread(current.stop), 30)
        finally:
            await asyncio.wait_for(db.close(), 30)
    transcript = "\n".join(str(item) for item in said)
    assert said and said[-1] == {"result": "ok"}, f"{transcript}\n--- server:\n{current.log()[-4000:]}"
    assert node.returncode == 0
    steps = [item["step"] for item in said if isinstance(item, dict) and "step" in item]
    assert steps == [
        "signed in",
        "subscribed",
        "inserts",
        "read status",
        "anon refused",
        "restored session",
        "refreshed",
        "restart",
        "signed out",
    ]
    for log in (tmp_path / "serve-1.log", tmp_path / "serve-2.log"):
        assert "Traceback" not in log.read_text(), log.read_text()[-4000:]


async def _restart(served: Served, env: dict[str, str], directory: Path, db: Database, world: World) -> Served:
    """Stop the server, send two broadcasts while it is down, start it again on its port."""
    await asyncio.wait_for(asyncio.to_thread(served.stop), 30)
    messaging = Messaging(db, NoPublisher())
    for n in (1, 2):
        await messaging.send(world.admins[0].viewer, world.broadcast_id, f"missed-{n}", uuid.uuid4().hex)
    return await asyncio.wait_for(
        asyncio.to_thread(start, env, directory / "serve-2.log", port=served.port), 3 * READY_TIMEOUT
    )
