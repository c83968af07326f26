"""The page's scripts name the wire only through protocol.js: no literal that `sitecomms.protocol` defines.

A frame type, change type, status, role, error code or close code written out in app.js (or
another module of the page: store.js, socket.js, views.js...) would silently keep its old value
when the protocol changes; imported from the generated protocol.js it follows the Python
package (tests/protocol/test_js.py keeps that file current).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sitecomms.protocol.frames import CloseCode
from sitecomms.protocol.js import TARGET
from tests.wire import wire_strings

APP = TARGET.with_name("app.js")
MODULES = sorted(p for p in TARGET.parent.glob("*.js") if p != TARGET)
SOCKET = TARGET.with_name("socket.js")
# The page's own connection states are words, not frames: "live" is also a frame type's value.
PAGE_STATES = re.compile(r"^export const Connection = Object\.freeze\(.*\);$", re.MULTILINE)
# Words the page writes in the DOM's own sense that a wire enum also spells (PushKind.MESSAGE):
# the "message" event of postMessage (the page and its service worker), the thread's
# `li.message` nodes and JSDoc prose. The payload's kind is still read as PushKind.MESSAGE.
DOM_WORDS = frozenset({"message"})
STRING = re.compile(r"""(["'`])((?:(?!\1)[^\\\n]|\\.)*)\1""")


def test_the_page_has_its_modules() -> None:
    assert {p.name for p in MODULES} >= {"app.js", "session.js", "store.js", "outbox.js", "socket.js", "views.js"}


def test_app_js_imports_the_generated_protocol_module() -> None:
    source = APP.read_text(encoding="utf-8")
    assert re.search(r'^import \{[^}]*\} from "\./protocol\.js";$', source, re.MULTILINE)
    assert len(PAGE_STATES.findall(SOCKET.read_text(encoding="utf-8"))) == 1


def test_each_dom_word_is_a_wire_string_else_it_needs_no_exemption() -> None:
    assert wire_strings() >= DOM_WORDS


def test_the_modules_find_string_literals() -> None:
    literals = {match.group(2) for match in STRING.finditer(TARGET.with_name("session.js").read_text(encoding="utf-8"))}
    assert "sitecomms.refresh" in literals, "the scan finds the scripts' string literals"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_no_module_holds_a_string_the_protocol_defines(module: Path) -> None:
    source = PAGE_STATES.sub("", module.read_text(encoding="utf-8"))
    literals = {match.group(2) for match in STRING.finditer(source)}
    protocol = wire_strings() - DOM_WORDS
    assert not literals & protocol, sorted(literals & protocol)


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_no_module_holds_a_close_code(module: Path) -> None:
    source = module.read_text(encoding="utf-8")
    written = [code for code in CloseCode if re.search(rf"(?<![\w.]){code.value}(?![\w.])", source)]
    assert not written, written
