"""`web/static/receipts.js`, run in Node: the dashboard's "read by R of N" counts as the server does.

`readCount` is held to the server's own rule (`visibility.message_recipients`, and "read" once
the read position reaches the message's) over random models: users of every role, active or
not, read statuses of admins, of medics who read further or not at all, of users the model does
not hold, and viewers and conversations for which there is nothing to count (null). Then named
edge cases, and `fetchReaders`' request. One Node process per batch of cases.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sitecomms.protocol.enums import ConversationType, Role
from sitecomms.protocol.js import TARGET
from sitecomms.server.services import visibility
from sitecomms.store.rows import ConversationRow, UserRow

RECEIPTS = TARGET.with_name("receipts.js")
CONVERSATION = "c-1"
ORG = "org-1"
NOW = datetime(2026, 1, 1, tzinfo=UTC)

DRIVER = """
import { readFileSync } from "node:fs";
const receipts = await import(process.argv[2]);
const cases = JSON.parse(readFileSync(process.argv[3], "utf-8"));
const results = cases.map((c) => {
  const model = {
    me: c.me_role === null ? null : { user: { id: "me", role: c.me_role }, org: { id: "org-1", name: "Org" } },
    conversations: new Map(),
    readers: new Map([[c.conversation_id, new Map(Object.entries(c.readers))]]),
    users: new Map(c.users.map((u) => [u.id, u])),
  };
  if (c.conversation_type !== null) {
    model.conversations.set(c.conversation_id, { id: c.conversation_id, type: c.conversation_type });
  }
  const args = [model, c.conversation_id, c.position];
  if (c.sender_id !== null) args.push(c.sender_id);
  return receipts.readCount(...args);
});
const calls = [];
const answer = await receipts.fetchReaders(async (...args) => { calls.push(args); return { ok: true }; }, "c/1", "m 2");
const text = receipts.readCountText({ read: 3, of: 5 });
console.log(JSON.stringify({ results, calls, answer, text }));
"""


@pytest.fixture(scope="module")
def run_node(tmp_path_factory: pytest.TempPathFactory) -> Any:
    node = shutil.which("node")
    if node is None:  # the run must fail, never skip
        pytest.fail("Node.js is required to check receipts.js (Debian: apt-get install nodejs)")
    directory = tmp_path_factory.mktemp("receipts-js")
    (directory / "package.json").write_text('{"type": "module"}', encoding="utf-8")  # .js files are ES modules
    for source in (RECEIPTS, TARGET):
        shutil.copyfile(source, directory / source.name)
    driver = directory / "driver.mjs"
    driver.write_text(DRIVER, encoding="utf-8")
    counter = iter(range(10**9))

    def run(cases: list[dict[str, Any]]) -> dict[str, Any]:
        data = directory / f"cases-{next(counter)}.json"
        data.write_text(json.dumps(cases), encoding="utf-8")
        module = (directory / RECEIPTS.name).as_uri()
        done = subprocess.run(
            [node, str(driver), module, str(data)], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    return run


def expected(case: dict[str, Any]) -> dict[str, int] | None:
    """The server's rule for the same data."""
    if case["me_role"] != Role.ADMIN or case["conversation_type"] != ConversationType.BROADCAST:
        return None
    if case["position"] is None:
        return None
    conversation = ConversationRow(case["conversation_id"], ORG, "broadcast", None, None, None, None, None, NOW, 1)
    rows = [
        UserRow(u["id"], ORG, f"{u['id']}@x.test", u["id"], u["role"], "hash", NOW, 1, u["active"], None)
        for u in case["users"]
    ]
    recipients = visibility.message_recipients(conversation, case["sender_id"] or "", rows)
    read = sum(case["readers"].get(u.id, 0) >= case["position"] for u in recipients)
    return {"read": read, "of": len(recipients)}


_IDS = [f"u{i}" for i in range(8)]


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(st.lists(st.sampled_from(_IDS), unique=True, max_size=len(_IDS)))
    users = [
        {
            "id": i,
            "role": draw(st.sampled_from([Role.MEDIC.value, Role.ADMIN.value])),
            "active": draw(st.booleans()),
            "display_name": i,
        }
        for i in ids
    ]
    readers = draw(st.dictionaries(st.sampled_from([*_IDS, "gone"]), st.integers(0, 12), max_size=9))
    return {
        "me_role": draw(st.sampled_from([Role.ADMIN.value] * 3 + [Role.MEDIC.value, None])),
        "conversation_type": draw(
            st.sampled_from([ConversationType.BROADCAST.value] * 3 + [ConversationType.DIRECT.value, None])
        ),
        "conversation_id": CONVERSATION,
        "users": users,
        "readers": readers,
        "position": draw(st.one_of(st.integers(1, 12), st.none())),
        "sender_id": draw(st.one_of(st.none(), st.sampled_from(_IDS))),
    }


# No shrinking: each step would be a Node run; the failing case is in the assertion message.
@settings(
    max_examples=5,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=st.lists(cases(), min_size=60, max_size=60))
def test_read_count_follows_the_servers_rule(run_node: Any, batch: list[dict[str, Any]]) -> None:
    results = run_node(batch)["results"]
    for case, got in zip(batch, results, strict=True):
        assert got == expected(case), case


def medic(user_id: str, *, active: bool = True) -> dict[str, Any]:
    return {"id": user_id, "role": Role.MEDIC.value, "active": active, "display_name": user_id}


def admin(user_id: str) -> dict[str, Any]:
    return {"id": user_id, "role": Role.ADMIN.value, "active": True, "display_name": user_id}


def case(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "me_role": Role.ADMIN.value,
        "conversation_type": ConversationType.BROADCAST.value,
        "conversation_id": CONVERSATION,
        "users": [admin("a1"), admin("a2"), medic("m1"), medic("m2"), medic("m3"), medic("gone", active=False)],
        "readers": {"a2": 9, "m1": 5, "m2": 9, "gone": 9},
        "position": 5,
        "sender_id": "a1",
    }
    return {**base, **changes}


def test_named_edge_cases(run_node: Any) -> None:
    named = {
        # m1 read exactly to it, m2 further, m3 nothing; a deactivated medic and an admin who
        # read are not counted.
        "read exactly and further": (case(), {"read": 2, "of": 3}),
        "a later message": (case(position=6), {"read": 1, "of": 3}),
        "nobody has read": (case(readers={}), {"read": 0, "of": 3}),
        "no medics": (case(users=[admin("a1")]), {"read": 0, "of": 0}),
        "a reader the model does not hold": (case(readers={"stranger": 99}), {"read": 0, "of": 3}),
        "the sender, since demoted, is no recipient": (
            case(users=[medic("a1"), medic("m1")], readers={"a1": 9}),
            {"read": 0, "of": 1},
        ),
        "without a sender": (case(sender_id=None), {"read": 2, "of": 3}),
        "a medic viewer": (case(me_role=Role.MEDIC.value), None),
        "signed out": (case(me_role=None), None),
        "a direct conversation": (case(conversation_type=ConversationType.DIRECT.value), None),
        "an unknown conversation": (case(conversation_type=None), None),
        "a queued message": (case(position=None), None),
    }
    results = run_node([c for c, _ in named.values()])["results"]
    for (label, (sent, want)), got in zip(named.items(), results, strict=True):
        assert got == want, label
        assert got == expected(sent), label


def test_fetch_readers_asks_the_receipts_route(run_node: Any) -> None:
    done = run_node([])
    assert done["calls"] == [["GET", "/v1/conversations/c%2F1/messages/m%202/receipts"]]
    assert done["answer"] == {"ok": True}, "the api's answer, as it is"
    assert done["text"] == "read by 3 of 5"
