"""`sitecomms backup`, `restore` and `export` (cli_ops.py): against real `sitecomms serve`
processes for the backup under a send load and the restore that clients with later cursors
must survive; in process (typer's CliRunner) for the refusals and the export's file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
import subprocess
import tempfile
import uuid
from contextlib import closing
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner, Result

from sitecomms.cli import app
from sitecomms.client import Client
from sitecomms.protocol.requests import SendMessageRequest, body
from sitecomms.server.demo import DEMO_ORG
from sitecomms.server.services.export import KINDS
from sitecomms.store import migrate
from tests.client.harness import ADMIN, MEDIC, MEDIC_NAME, PASSWORD, TIMEOUT, ApiUser, demo_database, server
from tests.servers import CLI_TIMEOUT, SITECOMMS, base_env, run_cli
from tests.support import small_disk

LOAD_BEFORE_BACKUP = 200  # messages acknowledged before the backup starts
SENDERS = 4


@pytest.fixture(autouse=True)
def no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process commands read only the settings a test gives them."""
    for name in [n for n in os.environ if n.startswith("SITECOMMS_")]:
        monkeypatch.delenv(name)


def ok(result: subprocess.CompletedProcess[str] | Result) -> str:
    code = result.returncode if isinstance(result, subprocess.CompletedProcess) else result.exit_code
    assert code == 0, f"exit {code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return str(result.stdout)


def refused(result: Result, *phrases: str) -> None:
    assert result.exit_code == 1, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in " ".join(result.stderr.split()), result.stderr


async def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.wait_for(asyncio.to_thread(run_cli, list(args), env), CLI_TIMEOUT + 10)


def invoke(*args: str, database_url: str) -> Result:
    return CliRunner().invoke(app, [*args, "--database-url", database_url], env=base_env(database_url))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def message_ids(path: Path) -> set[str]:
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return {row[0] for row in conn.execute("SELECT id FROM messages")}


# --- backup under load, restore ----------------------------------------------------------------


async def test_a_backup_during_a_send_load_holds_every_message_acknowledged_before_it(tmp_path: Path) -> None:
    async with server(tmp_path) as srv:
        admin = await ApiUser.login(srv.base_url)
        medic = await ApiUser.login(srv.base_url, MEDIC)
        everywhere = [c["id"] for c in await admin.conversations()]
        own = [c["id"] for c in await medic.conversations() if c["type"] == "direct"]
        acknowledged: list[str] = []
        enough = asyncio.Event()
        stop = asyncio.Event()

        async def send(user: ApiUser, conversation_ids: list[str], sender: int) -> None:
            async with user.http() as http:
                for n in range(1_000_000):
                    if stop.is_set():
                        return
                    request = SendMessageRequest(
                        conversation_ids[n % len(conversation_ids)], f"load {sender}.{n}", str(uuid.uuid4())
                    )
                    response = await http.post("/v1/messages", json=body(request))
                    assert response.status_code == 201, response.text
                    acknowledged.append(response.json()["id"])
                    if len(acknowledged) >= LOAD_BEFORE_BACKUP:
                        enough.set()

        senders = [asyncio.create_task(send(admin, everywhere, k)) for k in range(SENDERS - 1)]
        senders.append(asyncio.create_task(send(medic, own, SENDERS - 1)))
        target = tmp_path / "backups" / "nightly.db"
        target.parent.mkdir()
        try:
            async with asyncio.timeout(TIMEOUT * 3):
                await enough.wait()
            before = set(acknowledged)  # acknowledged before the backup began
            result = await cli("backup", str(target), env=srv.env)
            during = len(acknowledged) - len(before)
        finally:
            stop.set()
            async with asyncio.timeout(TIMEOUT):
                await asyncio.gather(*senders)
    output = ok(result)
    assert "integrity_check: ok" in output and f"revision {migrate.head_revision()}" in output
    assert during > 0, "the server went on acknowledging sends while the backup ran"
    assert mode(target) == 0o600
    in_copy = message_ids(target)
    missing = before - in_copy
    assert not missing, f"{len(missing)} of {len(before)} acknowledged messages are not in the backup"
    assert in_copy - set(acknowledged) <= message_ids_of_demo(tmp_path), "nothing in the copy that was never sent"
    with closing(sqlite3.connect(target)) as conn:  # one instant: no row ahead of its org's stream head
        behind = conn.execute(
            "SELECT count(*) FROM messages JOIN org_streams USING (org_id)"
            " WHERE messages.position > org_streams.position"
        ).fetchone()[0]
    assert behind == 0
    assert [p.name for p in target.parent.iterdir()] == ["nightly.db"], "no temporary file left"


def message_ids_of_demo(tmp_path: Path) -> set[str]:
    """The demo's own messages (a fresh copy of the template the server started from)."""
    return message_ids(Path(demo_database(tmp_path).removeprefix("sqlite:///")))


async def test_a_restored_server_sends_later_cursors_through_cursor_ahead_and_the_client_ends_equal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "medic-client.db"
    backup = tmp_path / "nightly.db"
    async with server(tmp_path) as srv:
        admin = await ApiUser.login(srv.base_url)  # signed in before the backup: the session is in it
        direct = await admin.conversation_id(MEDIC_NAME)
        await admin.send(direct, "before the backup")
        client = await Client.open(srv.base_url, store)
        try:
            await client.login(MEDIC, PASSWORD)
            await client.sync_now()
            ok(await cli("backup", str(backup), env=srv.env))
            later = [await admin.send(direct, f"after the backup {n}") for n in range(3)]
            await client.sync_now()
            assert {m.id for m in await client.thread(direct)} >= {m["id"] for m in later}
        finally:
            await client.close()
        cursor = (await admin.get("/v1/sync"))["next_cursor"]  # the admin's, later than the backup too

        while_serving = await cli("restore", str(backup), env=srv.env)
        assert while_serving.returncode == 1 and "in use" in while_serving.stderr, while_serving
        assert {m["id"] for m in later} <= {m["id"] for m in await admin.thread(direct)}, "nothing was restored"

        await srv.down()
        restored = ok(await cli("restore", str(backup), env=srv.env))
        assert "before-restore" in restored
        await srv.up()

        async with admin.http() as http:
            refused_cursor = await http.get("/v1/sync", params={"cursor": cursor})
        assert refused_cursor.status_code == 409 and refused_cursor.json()["error"]["code"] == "cursor_ahead"

        client = await Client.open(srv.base_url, store)
        try:
            with caplog.at_level(logging.WARNING, logger="sitecomms.client"):
                async with asyncio.timeout(TIMEOUT):
                    await client.sync_now()
            assert "cursor_ahead" in caplog.text, "the client met the documented path"
            on_server = await admin.thread(direct)
            assert [m["content"] for m in on_server][-1] == "before the backup"
            local = await client.thread(direct)
            assert [(m.id, m.content, m.position) for m in local] == [
                (m["id"], m["content"], m["position"]) for m in on_server
            ], "the client holds exactly what the restored server holds"
            server_list = await (await ApiUser.login(srv.base_url, MEDIC)).conversations()
            assert sorted((c.id, c.last_message_preview) for c in await client.conversations()) == sorted(
                (c["id"], c["last_message_preview"]) for c in server_list
            )
        finally:
            await client.close()


# --- refusals ----------------------------------------------------------------------------------


def test_postgresql_databases_are_pointed_to_pg_dump(tmp_path: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/sitecomms"
    refused(invoke("backup", str(tmp_path / "copy.db"), database_url=url), "pg_dump", "docs/deployment.md")
    refused(invoke("restore", str(tmp_path / "copy.db"), database_url=url), "pg_restore", "docs/deployment.md")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_backup_is_replaced_only_with_force(tmp_path: Path) -> None:
    url = demo_database(tmp_path)
    target = tmp_path / "nightly.db"
    target.write_bytes(b"yesterday")
    refused(invoke("backup", str(target), database_url=url), "exists", "--force")
    assert target.read_bytes() == b"yesterday"
    assert "integrity_check: ok" in ok(invoke("backup", str(target), "--force", database_url=url))
    assert mode(target) == 0o600 and message_ids(target) == message_ids(Path(url.removeprefix("sqlite:///")))


def test_restoring_a_file_that_is_not_a_sitecomms_database_is_refused(tmp_path: Path) -> None:
    url = demo_database(tmp_path)
    database = Path(url.removeprefix("sqlite:///"))
    before = database.read_bytes()
    junk = tmp_path / "photo.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 8192)
    refused(invoke("restore", str(junk), database_url=url), "is not an SQLite database")
    with closing(sqlite3.connect(tmp_path / "notes.db")) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.commit()
    refused(invoke("restore", str(tmp_path / "notes.db"), database_url=url), "is not a SiteComms database")
    assert database.read_bytes() == before
    assert not list(tmp_path.glob("*.before-restore-*"))


# --- export ------------------------------------------------------------------------------------


def test_export_writes_one_org_as_private_json_lines(tmp_path: Path) -> None:
    url = demo_database(tmp_path)
    other = ok(invoke("org", "create", "Elsewhere", database_url=url)).strip()
    ok(
        CliRunner().invoke(
            app,
            ["user", "create", "--org", "Elsewhere", "--email", "far@away.example", "--name", "Far Away",
             "--password", "elsewhere password", "--database-url", url],
            env=base_env(url),
        )
    )  # fmt: skip
    out = tmp_path / "exports" / "demo.jsonl"
    out.parent.mkdir()
    result = invoke("export", "--org", DEMO_ORG, "--out", str(out), database_url=url)
    ok(result)
    assert "Exported" in result.stderr and mode(out) == 0o600
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    kinds = {r["kind"] for r in records}
    assert kinds <= set(KINDS) and {"org", "user", "conversation", "message", "audit"} <= kinds
    assert records[0]["kind"] == "org" and records[0]["name"] == DEMO_ORG
    assert {r["org_id"] for r in records} == {records[0]["org_id"]} != {other}
    assert any(r["kind"] == "user" and r["email"] == ADMIN for r in records)
    text = out.read_text()
    assert "far@away.example" not in text and other not in text and "$argon2" not in text
    assert [p.name for p in out.parent.iterdir()] == ["demo.jsonl"], "no temporary file left"

    refused(invoke("export", "--org", DEMO_ORG, "--out", str(out), database_url=url), "exists", "--force")
    by_id = invoke("export", "--org", records[0]["org_id"], database_url=url)  # to stdout, by id
    assert [orjson.loads(line)["kind"] for line in ok(by_id).splitlines()] == [r["kind"] for r in records]
    refused(invoke("export", "--org", "No Such Org", database_url=url), "no organisation")


def test_export_never_writes_over_the_database_a_directory_or_a_special_file(tmp_path: Path) -> None:
    """`export --out live.db --force` once replaced the live database with the JSON lines."""
    url = demo_database(tmp_path)
    database = Path(url.removeprefix("sqlite:///"))
    before = message_ids(database)
    (tmp_path / "link.db").symlink_to(database)
    (tmp_path / "exports" / "old").mkdir(parents=True)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for target, phrase in [
        (database, "the database's own file"),
        (database.with_name(database.name + "-wal"), "the database's own file"),
        (tmp_path / "link.db", "the database's own file"),
        (tmp_path / "exports", "is a directory"),
        (fifo, "not a regular file"),
    ]:
        refused(invoke("export", "--org", DEMO_ORG, "--out", str(target), "--force", database_url=url), phrase)
    assert message_ids(database) == before and (tmp_path / "exports" / "old").is_dir()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and not list(tmp_path.glob(".*partial"))


def test_export_to_a_directory_it_cannot_write_in_is_one_clear_refusal(tmp_path: Path) -> None:
    url = demo_database(tmp_path)
    try:
        tempfile.mkstemp(dir="/sys")
    except OSError:
        pass
    else:
        pytest.skip("/sys is writable here")
    refused(invoke("export", "--org", DEMO_ORG, "--out", "/sys/demo.jsonl", database_url=url), "cannot write in /sys")


def test_export_that_cannot_be_written_is_one_line_blaming_the_output_not_the_database(tmp_path: Path) -> None:
    url = demo_database(tmp_path)
    env = base_env(url)
    command = [str(SITECOMMS), "export", "--org", DEMO_ORG]
    with open("/dev/full", "wb") as full:
        result = subprocess.run(command, env=env, stdout=full, stderr=subprocess.PIPE, text=True, timeout=CLI_TIMEOUT)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "error: cannot write the export to stdout: No space left on device" in result.stderr, result.stderr
    assert "cannot use the database" not in result.stderr

    reader, writer = os.pipe()
    os.close(reader)  # `sitecomms export | head -0`: nobody reads
    try:
        result = subprocess.run(command, env=env, stdout=writer, stderr=subprocess.PIPE, text=True, timeout=CLI_TIMEOUT)
    finally:
        os.close(writer)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == "error: cannot write the export to stdout: Broken pipe", result.stderr

    with small_disk(tmp_path, 1) as disk:
        with (disk / "filler").open("wb", buffering=0) as out, contextlib.suppress(OSError):  # until ENOSPC
            while True:
                out.write(b"\0" * 65536)
        result = subprocess.run(
            [*command, "--out", str(disk / "demo.jsonl")],
            env=env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        left = sorted(p.name for p in disk.iterdir())
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"error: cannot write the export to {disk / 'demo.jsonl'}: No space left on device" in " ".join(
        result.stderr.split()
    ), result.stderr
    assert left == ["filler"], "neither the export nor its temporary file is left"
