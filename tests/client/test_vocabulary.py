"""The Python clients (the SDK, `sitecomms chat`, the benchmark) hold no wire literal of their own.

A frame type, change type, status, role, error code or close code written out in a client
would silently keep its old value when `sitecomms.protocol` changes. The scan reads every
string and integer constant of those modules; the few that are the same words for other
things (a client's own connection state, a message between benchmark processes) are listed
here with their reason, so a new one fails until someone looks at it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sitecomms
from sitecomms.protocol.frames import CloseCode
from tests.wire import wire_strings

PACKAGE = Path(sitecomms.__file__).parent
CLIENTS = [*sorted((PACKAGE / "client").glob("*.py")), PACKAGE / "chat.py", *sorted((PACKAGE / "bench").glob("*.py"))]
NOT_WIRE = {
    ("client/_api.py", "error"): "the SDK's code for a 4xx whose body is not the protocol's error",
    ("client/_models.py", "live"): "the SDK's own connection state, shown to applications",
    ("chat.py", "live"): "the chat screen's label for that state",
    ("bench/scale.py", "live"): "a message between benchmark processes",
    ("bench/workers.py", "live"): "a message between benchmark processes",
    ("bench/push_phase.py", "sent"): "the push phase's own record of when the broadcast was sent",
    ("bench/push_service.py", "auth"): "the push double: the auth secret of a browser's PushSubscription keys",
}


def _constants(path: Path) -> list[object]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_fstrings = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and id(node) not in in_fstrings]


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    assert len(CLIENTS) > 10
    assert "/v1/messages" in {c for path in CLIENTS for c in _constants(path)}
    planted = tmp_path / "planted.py"
    planted.write_text('TYPE = "message.created"\nCODE = 4409\nLABEL = f"medic{x}"\n', encoding="utf-8")
    assert _constants(planted) == ["message.created", 4409]


def test_no_client_writes_out_a_wire_string() -> None:
    wire = wire_strings()
    found = {
        (str(path.relative_to(PACKAGE)), value)
        for path in CLIENTS
        for value in _constants(path)
        if isinstance(value, str) and value in wire
    }
    assert found <= set(NOT_WIRE), sorted(found - set(NOT_WIRE))


def test_no_client_writes_out_a_close_code() -> None:
    codes = {code.value for code in CloseCode}
    found = [
        (str(path.relative_to(PACKAGE)), value)
        for path in CLIENTS
        for value in _constants(path)
        if type(value) is int and value in codes
    ]
    assert not found, found
