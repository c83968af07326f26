"""`web/static/protocol.js`: committed, current, and the same vocabulary and backoff as Python.

The first test is the staleness check: it fails when the committed file is not what
`python -m sitecomms.protocol.js` would write now. The others import the module in Node and
compare what it exports (and what its `backoffDelay` computes) with the Python package.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from enum import Enum
from typing import Any

import pytest

from sitecomms.protocol import backoff, enums, errors, frames, js, limits

DRIVER = """
const protocol = await import(process.argv[2]);
const exported = {};
for (const [name, value] of Object.entries(protocol)) if (typeof value !== "function") exported[name] = value;
const delays = [];
for (const name of Object.keys(protocol.Backoff)) {
  for (let attempt = -1; attempt < 40; attempt += 1) {
    for (const r of [0, 0.25, 0.5, 0.999]) {
      delays.push([name, attempt, r, protocol.backoffDelay(attempt, protocol.Backoff[name], () => r)]);
    }
  }
}
const frozen = Object.entries(protocol).filter(([, v]) => typeof v === "object").every(([, v]) => Object.isFrozen(v));
const nominal = protocol.backoffDelay(3, protocol.Backoff.RECONNECT);
console.log(JSON.stringify({ exported, delays, frozen, nominal }));
"""


def test_the_committed_file_is_what_the_package_generates() -> None:
    assert js.TARGET.read_text(encoding="utf-8") == js.render(), f"stale: run `{js.COMMAND}` and commit the result"
    assert js.main(["js", "--check"]) == 0


@pytest.fixture(scope="module")
def from_node(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:  # the run must fail, never skip
        pytest.fail("Node.js is required to check protocol.js (Debian: apt-get install nodejs)")
    directory = tmp_path_factory.mktemp("protocol-js")
    module = directory / "protocol.mjs"  # .mjs: an ES module whatever package.json says
    shutil.copyfile(js.TARGET, module)
    driver = directory / "driver.mjs"
    driver.write_text(DRIVER, encoding="utf-8")
    done = subprocess.run([node, str(driver), module.as_uri()], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _python_enums() -> list[type[Enum]]:
    found = []
    for module in (enums, frames, errors):
        found += [
            v
            for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, Enum) and v.__module__ == module.__name__
        ]
    return found


def test_every_enum_member_and_limit_is_exported_under_its_python_name(from_node: dict[str, Any]) -> None:
    exported = from_node["exported"]
    for enum in _python_enums():
        assert exported[enum.__name__] == {m.name: m.value for m in enum}, enum.__name__
    assert exported["ChangeType"]["MESSAGE_CREATED"] == "message.created"
    assert exported["CloseCode"]["RESYNC_REQUIRED"] == 4409
    assert exported["MessageStatus"]["FAILED"] == "failed"
    assert exported["MAX_CONTENT_CHARS"] == limits.MAX_CONTENT_CHARS
    assert exported["MAX_FRAME_BYTES"] == frames.MAX_FRAME_BYTES
    assert exported["Backoff"] == {
        "RECONNECT": {"base": backoff.RECONNECT.base, "cap": backoff.RECONNECT.cap},
        "RETRY_SEND": {"base": backoff.RETRY_SEND.base, "cap": backoff.RETRY_SEND.cap},
        "RETRY_PUSH": {"base": backoff.RETRY_PUSH.base, "cap": backoff.RETRY_PUSH.cap},
    }
    assert from_node["frozen"], "app.js must not be able to change the vocabulary"


def test_the_javascript_backoff_computes_what_the_python_one_does(from_node: dict[str, Any]) -> None:
    policies = {"RECONNECT": backoff.RECONNECT, "RETRY_SEND": backoff.RETRY_SEND, "RETRY_PUSH": backoff.RETRY_PUSH}
    assert len(from_node["delays"]) == len(policies) * 41 * 4
    for name, attempt, r, seconds in from_node["delays"]:
        assert seconds == pytest.approx(policies[name].delay(attempt, rng=lambda r=r: r), rel=1e-12), (name, attempt, r)
    assert 2.0 <= from_node["nominal"] < 4.0  # Math.random by default: attempt 3 of RECONNECT is 4 s · [0.5, 1)
