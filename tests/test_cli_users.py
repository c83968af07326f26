"""`sitecomms user deactivate|reactivate|promote|demote|reset-password|list` and `sitecomms audit`:
real processes on SQLite and on the real PostgreSQL, and a running server that drops a
deactivated user's token."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx

from tests.servers import base_env, run_cli, serving
from tests.test_cli import ok

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"
ADMIN = "boss@clinic.example"
MEDIC = "nurse@clinic.example"
HTTP_TIMEOUT = 10.0
DROPPED_WITHIN = 2.0  # seconds for a running server to refuse a deactivated user's token


def refused(result: Any, message: str) -> None:
    assert result.returncode == 1, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr


def make_org(env: dict[str, str]) -> None:
    ok(run_cli(["org", "create", "Clinic North"], env))
    for email, name, role in ((ADMIN, "Dr Boss", "admin"), (MEDIC, "Nurse Joy", "medic")):
        ok(run_cli(["user", "create", "--org", "Clinic North", "--email", email, "--name", name, "--role", role], env,
                   input=f"{PASSWORD}\n"))  # fmt: skip


def rows(output: str) -> list[list[str]]:
    """The cells of each row of a Rich table (wide enough that nothing wraps)."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines() if line.startswith("│")]


def audit_rows(env: dict[str, str], *args: str) -> list[dict[str, str]]:
    names = ["id", "at", "kind", "actor", "subject", "address", "detail"]
    return [dict(zip(names, row, strict=True)) for row in rows(ok(run_cli(["audit", *args], env)))]


def test_lifecycle_commands_change_the_account_and_are_audited_as_the_operator(fresh_url: str) -> None:
    env = base_env(fresh_url, COLUMNS="300")
    make_org(env)

    assert ok(run_cli(["user", "deactivate", MEDIC], env)).strip() == f"{MEDIC}: medic, deactivated"
    listed = {row[0]: row for row in rows(ok(run_cli(["user", "list", "--org", "Clinic North"], env)))}
    assert (listed[MEDIC][2:4], listed[ADMIN][2:4]) == (["medic", "no"], ["admin", "yes"])
    assert ok(run_cli(["user", "reactivate", MEDIC], env)).strip() == f"{MEDIC}: medic, active"
    assert ok(run_cli(["user", "promote", MEDIC], env)).strip() == f"{MEDIC}: admin, active"
    assert ok(run_cli(["user", "demote", ADMIN], env)).strip() == f"{ADMIN}: medic, active"  # MEDIC is admin now
    refused(run_cli(["user", "demote", MEDIC], env), "the last active admin of an organisation cannot be demoted")
    ok(run_cli(["user", "reset-password", ADMIN, "--password", NEW_PASSWORD], env))
    ok(run_cli(["user", "reset-password", MEDIC], env, input=f"{NEW_PASSWORD}\n"))  # from stdin
    refused(run_cli(["user", "reset-password", MEDIC, "--password", "short"], env), "password")
    refused(run_cli(["user", "deactivate", "nobody@clinic.example"], env), "no user with email nobody@clinic.example")

    events = audit_rows(env, "--org", "Clinic North")
    kinds = [(e["kind"], e["subject"]) for e in events]
    assert kinds == [
        ("password_reset", MEDIC),
        ("password_reset", ADMIN),
        ("role_changed", ADMIN),
        ("role_changed", MEDIC),
        ("user_reactivated", MEDIC),
        ("user_deactivated", MEDIC),
        ("user_created", MEDIC),
        ("user_created", ADMIN),
    ]
    assert {e["actor"] for e in events} == {"(operator)"}
    assert [int(e["id"]) for e in events] == sorted((int(e["id"]) for e in events), reverse=True)
    assert '"old":"admin","new":"medic"' in events[2]["detail"]

    only_medic = audit_rows(env, "--user", MEDIC, "--kind", "role_changed")
    assert [(e["kind"], e["subject"]) for e in only_medic] == [("role_changed", MEDIC)]
    newest = ok(run_cli(["audit", "--limit", "1"], env))
    assert len(rows(newest)) == 1 and "older events" in newest
    usage = run_cli(["audit", "--kind", "coffee_break"], env)
    assert usage.returncode == 2 and "coffee_break" in usage.stderr, usage.stderr


def test_a_running_server_refuses_the_token_of_a_user_deactivated_from_the_cli(fresh_url: str, tmp_path: Path) -> None:
    shared_bus = {} if fresh_url.startswith("sqlite") else {"SITECOMMS_BUS_URL": fresh_url}
    env = base_env(fresh_url, COLUMNS="300", **shared_bus)
    make_org(env)
    with (
        serving(env, tmp_path / "serve.log") as served,
        httpx.Client(base_url=served.base_url, timeout=HTTP_TIMEOUT) as http,
    ):
        tokens = {}
        for email in (ADMIN, MEDIC):
            login = http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
            assert login.status_code == 200, f"{login.text}\n{served.describe()}"
            tokens[email] = {"Authorization": f"Bearer {login.json()['access_token']}"}
        assert http.get("/v1/me", headers=tokens[MEDIC]).status_code == 200  # cached by the server now

        ok(run_cli(["user", "deactivate", MEDIC], env))
        deadline = time.monotonic() + DROPPED_WITHIN
        status = 200
        while status == 200 and time.monotonic() < deadline:
            status = http.get("/v1/me", headers=tokens[MEDIC]).status_code
            time.sleep(0.05)
        assert status == 401, f"still {status} {DROPPED_WITHIN} s after the CLI deactivated the user\n{served.log()}"

        again = http.post("/v1/auth/login", json={"email": MEDIC, "password": PASSWORD})
        assert again.status_code == 401
        audit = http.get("/v1/audit", headers=tokens[ADMIN], params={"kind": "user_deactivated"})
        assert audit.status_code == 200, audit.text
        [event] = audit.json()["events"]
        assert event["actor_id"] is None and re.fullmatch(r"[0-9a-f-]{36}", event["subject_id"])
        failed = http.get("/v1/audit", headers=tokens[ADMIN], params={"kind": "sign_in_failed"}).json()["events"]
        assert [e["detail"]["reason"] for e in failed] == ["deactivated"]
