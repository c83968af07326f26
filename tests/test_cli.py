"""The `sitecomms` command end to end: real processes on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import re
import signal
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from sitecomms.server.demo import ADMINS, DEMO_PASSWORD, MEDICS
from sitecomms.store import migrate
from tests.servers import Served, aserving, base_env, fresh_database, run_cli, serving

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
HTTP_TIMEOUT = 10.0


def ok(result: Any) -> str:
    """The stdout of a CLI run that must have succeeded."""
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return str(result.stdout)


def client(served: Served, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return httpx.Client(base_url=served.base_url, headers=headers, timeout=HTTP_TIMEOUT)


def login(served: Served, email: str, password: str = DEMO_PASSWORD) -> str:
    with client(served) as http:
        response = http.post("/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, f"{response.text}\n{served.describe()}"
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


def get(http: httpx.Client, path: str, **params: Any) -> Any:
    response = http.get(path, params=params or None)
    assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
    return response.json()


def printed_medic_conversation(output: str) -> str:
    """The medic's direct conversation id, from the curl example `demo` prints."""
    found = re.search(r'"conversation_id": "([0-9a-f-]{36})"', output)
    assert found, output
    return found.group(1)


def printed_broadcast(output: str) -> str:
    found = re.search(r"Broadcast conversation id: ([0-9a-f-]{36})", output)
    assert found, output
    return found.group(1)


def test_demo_then_serve_medic_messages_admins(fresh_url: str, tmp_path: Path) -> None:
    env = base_env(fresh_url)
    output = ok(run_cli(["demo"], env))
    assert "Created demo organisation" in output
    assert DEMO_PASSWORD in output
    for email, name in [*ADMINS, *MEDICS]:
        assert email in output and name in output, f"{email} missing from:\n{output}"
    assert "curl -s -X POST" in output and "/v1/auth/login" in output and "/v1/messages" in output
    assert '"email": "medic1@demo.example"' in output
    printed_direct = printed_medic_conversation(output)

    with serving(env, tmp_path / "serve.log") as served:
        medic_token = login(served, "medic1@demo.example")
        with client(served, medic_token) as medic:
            listing = get(medic, "/v1/conversations")["conversations"]
            by_type = {c["type"]: c for c in listing}
            assert sorted(c["type"] for c in listing) == ["broadcast", "direct"], listing
            direct = by_type["direct"]
            assert direct["id"] == printed_direct
            assert direct["name"] == "Admin"  # a medic sees the admins as one team

            body = {"conversation_id": direct["id"], "content": "Need a stretcher at gate 4", "idempotency_key": "k-1"}
            first = medic.post("/v1/messages", json=body)
            assert first.status_code == 201, first.text
            retry = medic.post("/v1/messages", json=body)
            assert retry.status_code == 200, retry.text
            assert retry.json()["id"] == first.json()["id"]
            assert retry.json()["created_at"] == first.json()["created_at"]
            reused = medic.post("/v1/messages", json={**body, "content": "something else"})
            assert reused.status_code == 409, reused.text
            assert reused.json()["error"]["code"] == "idempotency_key_reused"
            sent = first.json()

        admin_token = login(served, "admin@demo.example")
        with client(served, admin_token) as admin:
            admin_id = get(admin, "/v1/me")["user"]["id"]
            conversations = {c["id"]: c for c in get(admin, "/v1/conversations")["conversations"]}
            assert len(conversations) == 1 + len(MEDICS)
            seen = conversations[direct["id"]]
            assert seen["name"] == "Maya Lindqvist"  # an admin sees the medic's name
            assert seen["last_message_preview"] == "Need a stretcher at gate 4"
            thread = get(admin, f"/v1/conversations/{direct['id']}/messages")["messages"]
            assert [m["id"] for m in thread].count(sent["id"]) == 1  # the retry made no second row
            assert thread[-1]["id"] == sent["id"] and thread[-1]["sender_name"] == "Maya Lindqvist"
            not_mine = [m for m in thread if m["sender_id"] != admin_id]
            assert seen["unread_count"] == len(not_mine) >= 3  # two seeded by the medic, and the new one

            read = admin.post(f"/v1/conversations/{direct['id']}/read")
            assert read.status_code == 200, read.text
            after = {c["id"]: c for c in get(admin, "/v1/conversations")["conversations"]}
            assert after[direct["id"]]["unread_count"] == 0

        # SIGTERM is a clean shutdown (uvicorn re-raises the signal once it has finished).
        assert served.stop() in (0, -signal.SIGTERM), served.describe()
        assert "Application shutdown complete" in served.log(), served.describe()


def test_migrate_org_user_and_token(fresh_url: str, tmp_path: Path) -> None:
    # No JWT secret configured: the CLI and the server share the one generated into the database.
    env = base_env(fresh_url, jwt_secret=None)
    head = migrate.head_revision()
    assert head is not None
    assert f"Database at revision {head}" in ok(run_cli(["migrate"], env))
    assert f"Database at revision {head}" in ok(run_cli(["migrate"], env))  # again: nothing to do

    org_id = ok(run_cli(["org", "create", "Clinic North"], env)).strip()
    assert UUID_RE.fullmatch(org_id), org_id
    medic_id = ok(
        run_cli(
            [
                *["user", "create", "--org", "Clinic North", "--email", "Nurse@Clinic.example"],
                *["--name", "Nurse Joy", "--role", "medic", "--password", "a-long-password"],
            ],
            env,
        )
    ).strip()
    assert UUID_RE.fullmatch(medic_id), medic_id
    # The org by id too, and the password from stdin when not given.
    admin_id = ok(
        run_cli(
            [
                "user",
                "create",
                "--org",
                org_id,
                "--email",
                "boss@clinic.example",
                "--name",
                "Dr Boss",
                "--role",
                "admin",
            ],
            env,
            input="another-password\n",
        )
    ).strip()
    assert UUID_RE.fullmatch(admin_id) and admin_id != medic_id

    token = ok(run_cli(["token", "nurse@clinic.example"], env)).strip()
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", token), token

    with serving(env, tmp_path / "serve.log") as served:
        with client(served, token) as medic:
            me = get(medic, "/v1/me")
            assert me["user"]["id"] == medic_id
            assert me["user"]["email"] == "nurse@clinic.example"
            assert me["user"]["role"] == "medic"
            assert me["org"] == {"id": org_id, "name": "Clinic North"}
            types = sorted(c["type"] for c in get(medic, "/v1/conversations")["conversations"])
            assert types == ["broadcast", "direct"]  # the new medic got their direct conversation
        with client(served, login(served, "boss@clinic.example", "another-password")) as admin:
            users = {u["id"]: u for u in get(admin, "/v1/users")["users"]}
            assert set(users) == {medic_id, admin_id}
            assert users[admin_id]["role"] == "admin"
        with client(served, token[:-2] + ("AA" if not token.endswith("AA") else "BB")) as forged:
            response = forged.get("/v1/me")
            assert response.status_code == 401, response.text


def test_demo_twice_is_idempotent(fresh_url: str, tmp_path: Path) -> None:
    env = base_env(fresh_url)
    first = ok(run_cli(["demo"], env))
    second = ok(run_cli(["demo"], env))
    assert "Created demo organisation" in first
    assert "Using the existing demo organisation" in second
    assert printed_medic_conversation(first) == printed_medic_conversation(second)
    assert printed_broadcast(first) == printed_broadcast(second)

    with serving(env, tmp_path / "serve.log") as served, client(served, login(served, "admin@demo.example")) as admin:
        org_id = get(admin, "/v1/me")["org"]["id"]
        users = get(admin, "/v1/users")["users"]
        emails = sorted(u["email"] for u in users)
        assert emails == sorted(email for email, _ in [*ADMINS, *MEDICS])
        assert {u["org_id"] for u in users} == {org_id}
        conversations = get(admin, "/v1/conversations")["conversations"]
        assert len(conversations) == 1 + len(MEDICS)
        thread = get(admin, f"/v1/conversations/{printed_medic_conversation(first)}/messages")["messages"]
        assert len(thread) == 3  # the demo messages were seeded once
        with client(served, login(served, "medic5@demo.example")) as medic:
            assert get(medic, "/v1/me")["org"]["id"] == org_id


def test_serve_demo_in_one_step(fresh_url: str, tmp_path: Path) -> None:
    env = base_env(fresh_url)
    with serving(env, tmp_path / "serve.log", ["--demo"]) as served:
        log = served.log()
        assert "Created demo organisation" in log and "medic1@demo.example" in log, served.describe()
        assert f"SiteComms listening on {served.base_url}" in log, served.describe()
        assert f"{served.base_url}/v1/auth/login" in log  # the curl example names this server
        with client(served, login(served, "medic1@demo.example")) as medic:
            listing = get(medic, "/v1/conversations")["conversations"]
            direct = next(c for c in listing if c["type"] == "direct")
            assert direct["id"] == printed_medic_conversation(log)
            assert direct["unread_count"] == 1  # the admin's reply in the seeded messages
            sent = medic.post(
                "/v1/messages",
                json={"conversation_id": direct["id"], "content": "on my way", "idempotency_key": str(uuid.uuid4())},
            )
            assert sent.status_code == 201, sent.text
    # Serving again with --demo reuses the organisation.
    with serving(env, tmp_path / "serve-again.log", ["--demo"]) as served:
        assert "Using the existing demo organisation" in served.log(), served.describe()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "user",
                "create",
                "--org",
                "Nowhere",
                "--email",
                "a@b.example",
                "--name",
                "A",
                "--password",
                "long-enough",
            ],
            "no organisation 'Nowhere'",
        ),
        (["token", "nobody@nowhere.example"], "no user with email nobody@nowhere.example"),
        (["org", "create", "   "], "organisation name: must not be empty"),
        (  # printed as text, not read as console markup
            [
                "user",
                "create",
                "--org",
                "[/red] Team",
                "--email",
                "a@b.example",
                "--name",
                "A",
                "--password",
                "12345678",
            ],
            "no organisation '[/red] Team'",
        ),
    ],
    ids=["user-into-missing-org", "token-for-unknown-email", "blank-org-name", "markup-in-message"],
)
def test_cli_errors_are_clear(fresh_url: str, args: list[str], message: str) -> None:
    result = run_cli(args, base_env(fresh_url))
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    assert f"error: {message}" in result.stderr, result.stderr
    assert result.stdout == ""


def test_cli_refuses_duplicates_and_short_passwords(fresh_url: str) -> None:
    env = base_env(fresh_url)
    org_id = ok(run_cli(["org", "create", "Dupes"], env)).strip()
    create = ["user", "create", "--org", org_id, "--email", "same@dupes.example", "--name", "Same"]
    assert UUID_RE.fullmatch(ok(run_cli([*create, "--password", "long-enough"], env)).strip())
    again = run_cli([*create, "--password", "long-enough"], env)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert "error: a user with email same@dupes.example already exists" in again.stderr
    short = run_cli(
        ["user", "create", "--org", org_id, "--email", "x@dupes.example", "--name", "X", "--password", "short"], env
    )
    assert short.returncode == 1 and "password: must be at least 10 characters" in short.stderr


UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nothing_listens_here"
UNOPENABLE = "sqlite:////nonexistent-dir/sitecomms.db"
CANNOT_USE = "error: cannot use the database"


@pytest.mark.parametrize(
    ("command", "url", "message"),
    [
        (["migrate"], UNREACHABLE, CANNOT_USE),
        (["migrate"], UNOPENABLE, CANNOT_USE),
        (["migrate"], "mysql://user@localhost/db", "error: invalid database URL: unsupported database URL scheme"),
        (["migrate"], "not a url", "error: invalid database URL"),
        (["serve"], UNREACHABLE, CANNOT_USE),
        (["serve", "--demo"], UNOPENABLE, CANNOT_USE),
        (["org", "create", "X"], UNREACHABLE, CANNOT_USE),
    ],
    ids=[
        "migrate-unreachable",
        "migrate-unopenable",
        "migrate-scheme",
        "migrate-garbage",
        "serve",
        "serve-demo",
        "org",
    ],
)
def test_cli_reports_a_bad_database_without_a_traceback(url: str, message: str, command: list[str]) -> None:
    result = run_cli(command, base_env(url))
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    "command", [["migrate"], ["serve"], ["export", "--org", "Demo Field Team"]], ids=["migrate", "serve", "export"]
)
def test_cli_refuses_a_database_it_cannot_migrate_without_a_traceback(tmp_path: Path, command: list[str]) -> None:
    newer = tmp_path / "newer.db"
    ok(run_cli(["migrate"], base_env(f"sqlite:///{newer}")))
    with closing(sqlite3.connect(newer)) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")  # left by a newer release
        conn.commit()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database " * 500)
    for url, message in [
        (f"sqlite:///{newer}", "migration revision '9999', which this version of SiteComms"),
        (f"sqlite:///{junk}", "is not an SQLite database"),
    ]:
        result = run_cli(command, base_env(url))
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr + result.stdout, result.stderr
        assert message in " ".join(result.stderr.split()), result.stderr
    assert junk.read_bytes() == b"not a database " * 500


@pytest.mark.postgres
async def test_serve_does_not_print_the_database_password(tmp_path: Path) -> None:
    async with fresh_database("postgresql", tmp_path) as url:
        with_password = url.replace("postgresql://postgres@", "postgresql://postgres:not-for-logs@")
        assert with_password != url
        # PostgreSQL trusts local connections here, so the password is accepted and ignored.
        async with aserving(base_env(with_password), tmp_path / "serve.log") as served:
            async with httpx.AsyncClient(base_url=served.base_url, timeout=HTTP_TIMEOUT) as http:
                ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            log = served.log()
        assert "SiteComms listening on" in log and "postgres:***@" in log, log
        assert "not-for-logs" not in log
