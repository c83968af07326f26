"""`server/logs.py` and `SITECOMMS_LOG_FORMAT=json`: JSON lines with the request context, and no secrets.

The formatter, the request ids and uvicorn's redaction are checked on records made here. Then
one real `sitecomms serve` in JSON at debug level (the most it ever says) is driven through a
sign-in with a distinctive password, a wrong one, a bogus token, a message with a distinctive
text, a WebSocket carrying the access token in its hello, in an `auth` frame, in its query and
in an Authorization header, a refresh, and hostile `X-Request-ID`s; its whole output must then
be JSON lines, with access lines naming route templates and the caller, and contain none of
those strings. The same run in the default text format must not show them either.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Frame, Opcode

from sitecomms.protocol.enums import Role
from sitecomms.server import logs
from sitecomms.server.app import build_accounts
from sitecomms.server.services.accounts import NewUser
from sitecomms.server.services.publisher import NoPublisher
from sitecomms.store.database import open_database
from tests.servers import aserving, base_env
from tests.support import fast_settings

WAIT = 15.0  # seconds for any answer (a shared machine)
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
FRESH = re.compile(r"[0-9a-f]{32}")
LEVELS = {"debug", "info", "warning", "error", "critical"}


def record(
    msg: str,
    *args: object,
    level: int = logging.INFO,
    name: str = "sitecomms.tests",
    fields: dict[str, Any] | None = None,
) -> logging.LogRecord:
    made = logging.LogRecord(name, level, __file__, 1, msg, args or None, None)
    if fields is not None:
        setattr(made, logs.FIELDS, fields)
    return made


def formatted(made: logging.LogRecord) -> dict[str, Any]:
    line = logs.JsonFormatter().format(made)
    assert "\n" not in line
    parsed = orjson.loads(line)
    assert isinstance(parsed, dict)
    return parsed


# --- the formatter -----------------------------------------------------------------------------


def test_a_record_is_one_json_object_with_time_level_logger_and_message() -> None:
    made = record("sent %d frames to %s", 3, "a socket")
    made.created = 1_796_300_000.25
    made.msecs = 250.0
    entry = formatted(made)
    assert entry == {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S.250Z", time.gmtime(made.created)),
        "level": "info",
        "logger": "sitecomms.tests",
        "message": "sent 3 frames to a socket",
    }
    assert TIME.fullmatch(entry["time"])


@pytest.mark.parametrize(
    ("level", "shown"),
    [(logging.DEBUG, "debug"), (logging.WARNING, "warning"), (logging.ERROR, "error"), (logging.CRITICAL, "critical")],
)
def test_levels_are_lower_case_so_only_real_errors_say_error(level: int, shown: str) -> None:
    line = logs.JsonFormatter().format(record("something", level=level))
    assert orjson.loads(line)["level"] == shown
    assert "ERROR" not in line and "WARNING" not in line


def test_records_made_while_serving_a_request_carry_its_context() -> None:
    assert "request_id" not in formatted(record("outside"))
    token = logs.enter(logs.RequestContext("req-1"))
    try:
        assert formatted(record("before sign-in"))["request_id"] == "req-1"
        assert "user_id" not in formatted(record("before sign-in"))
        logs.identify("user-1", "org-1")
        entry = formatted(record("after"))
        assert (entry["request_id"], entry["user_id"], entry["org_id"]) == ("req-1", "user-1", "org-1")
    finally:
        logs.leave(token)
    assert logs.current() is None
    logs.identify("nobody", "nowhere")  # outside a request: nothing to name, nothing happens
    assert "user_id" not in formatted(record("outside again"))


def test_fields_and_exceptions_are_their_own_keys() -> None:
    try:
        raise ValueError("the cause")
    except ValueError:
        failed = record("it failed", level=logging.ERROR)
        failed.exc_info = sys.exc_info()
    entry = formatted(failed)
    assert entry["message"] == "it failed"
    assert entry["exception"].startswith("Traceback") and "ValueError: the cause" in entry["exception"]
    extra = formatted(record("access", fields={"status": 201, "route": "/v1/x", "odd": object()}))
    assert (extra["status"], extra["route"]) == (201, "/v1/x")
    assert extra["odd"].startswith("<object object")  # anything else is shown by repr, never refused
    clash = formatted(record("access", fields={"message": "not this", "level": "nor this"}))
    assert (clash["message"], clash["level"]) == ("access", "info")  # fields never replace the core keys


def test_text_json_cannot_hold_is_escaped_not_a_logging_error() -> None:
    """A lone surrogate (a file name in SITECOMMS_KEY_FILE that is not UTF-8, decoded by Python with
    surrogateescape) made orjson refuse the record: logging printed a traceback and lost the line."""
    odd = Path("/srv/keys-\udcff.json")
    entry = formatted(record("cannot look at the key file %s", odd, fields={"path": str(odd), "raw": odd}))
    assert entry["message"] == "cannot look at the key file /srv/keys-\\udcff.json"
    assert entry["path"] == "/srv/keys-\\udcff.json" and entry["raw"] == "PosixPath('/srv/keys-\\udcff.json')"
    assert formatted(record("plain %s", "é \u2028 \U0001f600"))["message"] == "plain é \u2028 \U0001f600"


# --- request ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("sane", [b"a", b"A-z_0.9:x", b"7" * 128])
def test_a_sane_request_id_is_kept(sane: bytes) -> None:
    assert logs.request_id(sane) == sane.decode()


@pytest.mark.parametrize(
    "hostile", [None, b"", b"7" * 129, b"a\nb", b"a\r\nb", b'a"b', b"a b", b"a/b", b"a\x00b", "é".encode(), b"\xff"]
)
def test_anything_else_gets_a_fresh_id(hostile: bytes | None) -> None:
    fresh = logs.request_id(hostile)
    assert FRESH.fullmatch(fresh), fresh
    assert fresh != logs.request_id(hostile)


def test_a_fresh_id_is_a_version_4_uuid_in_hex() -> None:
    made = {logs.fresh_id() for _ in range(1000)}
    assert len(made) == 1000
    for fresh in made:
        parsed = uuid.UUID(hex=fresh)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, fresh)


# --- uvicorn's lines ---------------------------------------------------------------------------


def redacted(made: logging.LogRecord) -> str:
    assert logs.UvicornRedaction().filter(made) is True  # redacts, never drops
    return made.getMessage()


def test_uvicorn_request_targets_lose_their_query() -> None:
    access = record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/v1/realtime?token=s3cret&x=1", "1.1", 101)
    assert redacted(access) == '127.0.0.1:5000 - "GET /v1/realtime?*** HTTP/1.1" 101'
    accepted = record('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", "/v1/realtime?access_token=s3cret")
    assert redacted(accepted) == '127.0.0.1:5000 - "WebSocket /v1/realtime?***" [accepted]'
    handshake = record("< %s %s %s", "GET", "/v1/realtime?jwt=s3cret", "HTTP/1.1")
    assert redacted(handshake) == "< GET /v1/realtime?*** HTTP/1.1"
    plain = record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/healthz", "1.1", 200)
    assert redacted(plain) == '127.0.0.1:5000 - "GET /healthz HTTP/1.1" 200'
    assert redacted(record("Application startup complete.")) == "Application startup complete."


@pytest.mark.parametrize(
    "name",
    ["Authorization", "cookie", "Sec-WebSocket-Protocol", "X-Api-Key", "X-Auth-Token", "X-Auth", "X-Password", "X-Pwd"],
)
def test_websocket_handshake_headers_that_may_carry_secrets_are_masked(name: str) -> None:
    assert redacted(record("< %s: %s", name, "Bearer s3cret")) == f"< {name}: ***"
    assert redacted(record("> %s: %s", name, "s3cret")) == f"> {name}: ***"


def test_other_handshake_headers_are_shown() -> None:
    assert redacted(record("< %s: %s", "Host", "chat.example.org")) == "< Host: chat.example.org"


def test_websocket_frames_show_their_kind_and_size_never_their_data() -> None:
    data = b'{"type":"hello","token":"s3cret"}'
    assert redacted(record("< %s", Frame(Opcode.TEXT, data))) == f"< TEXT [{len(data)} bytes]"
    assert redacted(record("> %s", Frame(Opcode.PING, b""))) == "> PING [0 bytes]"
    assert redacted(record("= connection is %s", "OPEN")) == "= connection is OPEN"


# --- a real server in JSON ---------------------------------------------------------------------

LOGIN_ID = "login.trace-1"
SOCKET_ID = "socket:trace-2"
SEND_ID = "send_trace-3"
HOSTILE = [b'hostile"quote', b"hostile-" + b"x" * 130, "hostilé".encode(), b"hostile<script>alert(1)</script>"]


@dataclass
class Scenario:
    """What the server printed, and what it must never have printed."""

    raw: str
    lines: list[dict[str, Any]]
    secrets: dict[str, str]
    user_id: str
    org_id: str
    broadcast_id: str
    fresh_ids: list[str] = field(default_factory=list)

    def find(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [line for line in self.lines if predicate(line)]

    def access(self, **expected: Any) -> dict[str, Any]:
        found = self.find(
            lambda line: (
                line["logger"] == "sitecomms.requests"
                and all(line.get(key) == value for key, value in expected.items())
            )
        )
        assert len(found) == 1, (expected, found)
        return found[0]


async def frames_until(ws: ClientConnection, predicate: Callable[[str], bool]) -> str:
    async with asyncio.timeout(WAIT):
        while True:
            frame = await ws.recv()
            assert isinstance(frame, str)
            if predicate(frame):
                return frame


def of_type(kind: str) -> Callable[[str], bool]:
    return lambda frame: orjson.loads(frame).get("type") == kind


async def drive(base_url: str, email: str, secrets: dict[str, str], scenario_ids: list[str]) -> str:
    """Everything a client does that could leak; returns the broadcast conversation's id."""
    async with httpx.AsyncClient(base_url=base_url, timeout=WAIT) as http:
        login = await http.post(
            "/v1/auth/login", json={"email": email, "password": secrets["password"]}, headers={"X-Request-ID": LOGIN_ID}
        )
        assert login.status_code == 200, login.text
        assert login.headers["x-request-id"] == LOGIN_ID
        token = login.json()["access_token"]
        secrets["access token"] = token
        secrets["refresh token"] = login.json()["refresh_token"]
        caller = {"Authorization": f"Bearer {token}"}
        listed = await http.get("/v1/conversations", headers=caller)
        assert listed.status_code == 200, listed.text
        broadcast = next(c["id"] for c in listed.json()["conversations"] if c["medic_id"] is None)

        url = base_url.replace("http://", "ws://", 1) + f"/v1/realtime?token={token}"
        async with asyncio.timeout(WAIT):
            ws = await connect(
                url,
                proxy=None,
                open_timeout=WAIT,
                close_timeout=2,
                additional_headers={"X-Request-ID": SOCKET_ID, **caller},
            )
        async with ws:
            assert ws.response is not None and ws.response.headers["X-Request-ID"] == SOCKET_ID
            await ws.send(orjson.dumps({"type": "hello", "token": token}).decode())
            await frames_until(ws, of_type("live"))
            sent = await http.post(
                "/v1/messages",
                json={
                    "conversation_id": broadcast,
                    "content": secrets["message text"],
                    "idempotency_key": uuid.uuid4().hex,
                },
                headers={**caller, "X-Request-ID": SEND_ID},
            )
            assert sent.status_code == 201, sent.text
            await frames_until(ws, lambda frame: secrets["message text"] in frame)  # sent over the socket too
            await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
            await frames_until(ws, of_type("authenticated"))

        messages = await http.get(f"/v1/conversations/{broadcast}/messages", headers=caller)
        assert messages.status_code == 200 and secrets["message text"] in messages.text
        refreshed = await http.post("/v1/auth/refresh", json={"refresh_token": secrets["refresh token"]})
        assert refreshed.status_code == 200, refreshed.text
        secrets["refreshed access token"] = refreshed.json()["access_token"]
        secrets["refreshed refresh token"] = refreshed.json()["refresh_token"]
        wrong = await http.post("/v1/auth/login", json={"email": email, "password": secrets["wrong password"]})
        assert wrong.status_code == 401, wrong.text
        bogus = await http.get("/v1/conversations", headers={"Authorization": f"Bearer {secrets['bogus token']}"})
        assert bogus.status_code == 401, bogus.text
        for hostile in HOSTILE:
            answer = await http.get("/healthz", headers=[(b"X-Request-ID", hostile)])
            assert answer.status_code == 200
            given = answer.headers["x-request-id"]
            assert FRESH.fullmatch(given), given
            scenario_ids.append(given)
    return str(broadcast)


async def run_scenario(directory: Path, log_format: str) -> Scenario:
    """A server in `log_format` at debug level, driven through everything that could leak, then stopped."""
    url = f"sqlite:///{directory / 'sitecomms.db'}"
    tag = uuid.uuid4().hex[:8]
    secrets = {
        "password": f"Pw-{uuid.uuid4().hex}-unicorn",
        "wrong password": f"Wrong-{uuid.uuid4().hex}-narwhal",
        "message text": f"Text {uuid.uuid4().hex} zebra quokka",
        "bogus token": f"bogus-{uuid.uuid4().hex}-token",
    }
    email = f"logs-{tag}@admin.example"
    fresh_ids: list[str] = []
    env = base_env(url, SITECOMMS_LOG_FORMAT=log_format, SITECOMMS_LOG_LEVEL="debug")
    async with aserving(env, directory / "serve.log") as served:
        db = open_database(url, pool_size=2)
        try:
            accounts = build_accounts(fast_settings(url), db, NoPublisher())
            async with asyncio.timeout(WAIT):
                org = await accounts.create_org(f"Logs {tag}")
                user = await accounts.create_user(
                    None, org.id, NewUser(email, "Log Admin", Role.ADMIN, secrets["password"])
                )
        finally:
            await asyncio.wait_for(db.close(), WAIT)
        broadcast = await drive(served.base_url, email, secrets, fresh_ids)
    raw = served.log()
    lines = [orjson.loads(line) for line in raw.splitlines() if line.strip()] if log_format == "json" else []
    return Scenario(raw, lines, secrets, user.id, org.id, broadcast, fresh_ids)


@pytest.fixture(scope="module")
async def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return await run_scenario(tmp_path_factory.mktemp("logs"), "json")


def test_every_line_of_the_output_is_a_json_record(scenario: Scenario) -> None:
    assert scenario.lines, scenario.raw
    for line in scenario.lines:
        assert isinstance(line, dict), line
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        assert TIME.fullmatch(line["time"]), line
        assert line["level"] in LEVELS, line
    assert not scenario.find(lambda line: line["level"] in ("error", "critical"))
    for trouble in ("Traceback", "ERROR", "Exception in ASGI application"):  # the suite's server-log check
        assert trouble not in scenario.raw, scenario.raw[-5000:]
    loggers = {line["logger"] for line in scenario.lines}
    assert {"uvicorn.error", "uvicorn.access", "sitecomms.requests", "sitecomms.server"} <= loggers, loggers
    assert scenario.find(lambda line: line["message"].startswith("SiteComms listening on http://"))
    assert scenario.find(lambda line: line["message"] == "Application shutdown complete.")


def test_access_lines_name_the_route_template_the_status_and_the_caller(scenario: Scenario) -> None:
    ids = {"user_id": scenario.user_id, "org_id": scenario.org_id}
    login = scenario.access(request_id=LOGIN_ID)
    assert (login["user_id"], login["org_id"]) == (scenario.user_id, scenario.org_id)  # named by the sign-in
    assert (login["method"], login["route"], login["status"]) == ("POST", "/v1/auth/login", 200)
    assert isinstance(login["duration_ms"], float) and login["duration_ms"] > 0
    assert scenario.access(request_id=SEND_ID, method="POST", route="/v1/messages", status=201, **ids)
    assert scenario.access(route="/v1/conversations/{conversation_id}/messages", status=200, **ids)
    assert scenario.access(route="/v1/auth/refresh", status=200, **ids)
    assert scenario.access(route="/v1/auth/login", status=401, user_id=None)
    assert scenario.access(route="/v1/conversations", status=401, user_id=None)
    socket = scenario.access(request_id=SOCKET_ID, method="WEBSOCKET", route="/v1/realtime", status=101, **ids)
    assert isinstance(socket["close_code"], int)
    ours = scenario.find(lambda line: line["logger"] == "sitecomms.requests")
    assert not [line for line in ours if scenario.broadcast_id in orjson.dumps(line).decode()]  # templates only


def test_records_made_while_serving_carry_the_request_and_caller(scenario: Scenario) -> None:
    (accepted,) = scenario.find(lambda line: line["message"].endswith('"WebSocket /v1/realtime?***" [accepted]'))
    assert accepted["logger"] == "uvicorn.error"
    assert accepted["request_id"] == SOCKET_ID  # uvicorn's own line, made inside the request
    sent_frames = scenario.find(lambda line: re.fullmatch(r"> TEXT \[\d+ bytes\]", line["message"]) is not None)
    assert any(line.get("request_id") == SOCKET_ID for line in sent_frames), scenario.raw[-3000:]
    uvicorn_access = scenario.find(lambda line: line["logger"] == "uvicorn.access")
    assert all("?" not in line["message"] or "?***" in line["message"] for line in uvicorn_access)


def test_hostile_request_ids_are_replaced_and_never_logged(scenario: Scenario) -> None:
    assert "hostil" not in scenario.raw
    for given in scenario.fresh_ids:
        assert scenario.access(request_id=given, route="/healthz", status=200)


def fragments(secret: str) -> list[str]:
    """`secret`, and parts of it that a truncated line (a debug frame's first bytes) could show."""
    parts = [secret]
    if secret.startswith("eyJ") and secret.count(".") == 2:  # a JWT: each of its segments
        parts += [segment[:16] for segment in secret.split(".")]
    elif "." in secret:  # a refresh token: <session id>.<secret>
        parts.append(secret.rsplit(".", 1)[-1][:16])
    parts += re.findall(r"[0-9a-f]{32}", secret)  # the random core of the others
    return parts


def test_no_password_token_or_message_text_is_logged(scenario: Scenario) -> None:
    assert set(scenario.secrets) >= {
        "password",
        "access token",
        "refresh token",
        "message text",
        "refreshed access token",
    }
    for name, secret in scenario.secrets.items():
        for fragment in fragments(secret):
            assert fragment not in scenario.raw, f"the server logged (part of) the {name}: {fragment}"
    # the debug level really showed the socket's handshake and frames, as redacted lines
    assert scenario.find(lambda line: line["message"].lower() == "< authorization: ***")
    assert scenario.find(lambda line: re.fullmatch(r"> TEXT \[\d+ bytes\]", line["message"]) is not None)
    assert "Bearer" not in scenario.raw


async def test_a_text_server_at_debug_level_logs_no_secret_either(tmp_path: Path) -> None:
    """The redaction of uvicorn's lines holds in the default format too (uvicorn's own lines)."""
    text = await run_scenario(tmp_path, "text")
    for name, secret in text.secrets.items():
        for fragment in fragments(secret):
            assert fragment not in text.raw, f"the server logged (part of) the {name}: {fragment}"
    assert '"WebSocket /v1/realtime?***" [accepted]' in text.raw
    assert "Bearer" not in text.raw and "hostil" not in text.raw
    assert "sitecomms.requests" not in text.raw and '"route"' not in text.raw  # no JSON access line in text
    for trouble in ("Traceback", "ERROR"):
        assert trouble not in text.raw, text.raw[-5000:]
