"""app.js names the wire only through protocol.js: no literal that `sitecomms.protocol` defines.

A frame type, change type, status, role, error code or close code written out in app.js would
silently keep its old value when the protocol changes; imported from the generated protocol.js
it follows the Python package (tests/protocol/test_js.py keeps that file current).
"""

from __future__ import annotations

import re

from sitecomms.protocol.frames import CloseCode
from sitecomms.protocol.js import TARGET
from tests.wire import wire_strings

APP = TARGET.with_name("app.js")
# The page's own connection states are words, not frames: "live" is also a frame type's value.
PAGE_STATES = re.compile(r"^const Socket = Object\.freeze\(.*\);$", re.MULTILINE)
STRING = re.compile(r"""(["'`])((?:(?!\1)[^\\\n]|\\.)*)\1""")


def test_app_js_imports_the_generated_protocol_module() -> None:
    source = APP.read_text(encoding="utf-8")
    assert re.search(r'^} from "\./protocol\.js";$', source, re.MULTILINE)
    assert len(PAGE_STATES.findall(source)) == 1


def test_app_js_holds_no_string_the_protocol_defines() -> None:
    source = PAGE_STATES.sub("", APP.read_text(encoding="utf-8"))
    literals = {match.group(2) for match in STRING.finditer(source)}
    assert "sitecomms.token" in literals, "the scan finds app.js's string literals"
    assert not literals & wire_strings(), sorted(literals & wire_strings())


def test_app_js_holds_no_close_code() -> None:
    source = APP.read_text(encoding="utf-8")
    written = [code for code in CloseCode if re.search(rf"(?<![\w.]){code.value}(?![\w.])", source)]
    assert not written, written
