"""Isolation, as a property: in random worlds, no read endpoint ever shows anything it should not.

Each example builds 2-3 fresh organisations with random numbers of admins and medics, plays a
random sequence of legitimate actions (sends, mark-reads, renames), tries a sweep of writes the
caller is not entitled to (among them every account-lifecycle and session endpoint, on users
out of the caller's reach: `lifecycle_intrusion`), and then asks every read endpoint as every
member. The test keeps its
own model of what happened and restates the visibility rules (design §3) independently of
`sitecomms.server.services.visibility`, so it can catch a wrong rule as well as a path that
forgets to apply one. It checks both sides:

- nothing returned belongs to another org, or (for a medic) to another medic: org ids,
  conversation ids, message ids and contents, user ids, read statuses, names, emails; also
  a raw scan of every response body for identifiers and names the caller must not learn;
- everything the caller may see is there: exactly the expected conversations, messages,
  users and read statuses, from the thread endpoint, the snapshot sync and incremental sync;
- the WatermelonDB endpoint holds the same: its first and incremental pulls carry exactly the
  visible rows, rendered for the caller (a device's own messages as `updated`), and a push into
  conversations the caller may not write or see is refused record by record, applying nothing.

Data from earlier examples (and other tests) stays in the session's database. Each example
makes fresh orgs, so every expectation is about this example's orgs plus "nothing outside
my org".
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sitecomms.protocol.cursors import Cursor
from sitecomms.protocol.enums import Role
from tests.conftest import Stack
from tests.server.api.lifecycle_intrusion import intrude_on_lifecycle
from tests.support import Member, World

EXAMPLE_TIMEOUT_SECONDS = 120
THREAD_LIMIT = 200  # the protocol's maximum page; examples stay far below it

# --- the plan: what a random example does --------------------------------------------------


@dataclass(frozen=True)
class MedicSends:
    org: int
    medic: int


@dataclass(frozen=True)
class AdminSends:
    org: int
    admin: int
    medic: int | None  # None: into the broadcast


@dataclass(frozen=True)
class MarksRead:
    org: int
    member: int  # index into World.members (admins first)
    medic: int | None  # None: the broadcast; for a medic reader, anything else is their own direct


@dataclass(frozen=True)
class Renames:
    org: int
    actor: int  # index into World.members
    target: int  # index into World.members; a medic actor always renames themself


Action = MedicSends | AdminSends | MarksRead | Renames


@dataclass(frozen=True)
class Plan:
    shapes: tuple[tuple[int, int], ...]  # (admins, medics) per org
    actions: tuple[Action, ...]
    sync_limit: int  # page size for the incremental sync


def _actions_in(org: int, admins: int, medics: int) -> st.SearchStrategy[Action]:
    members = admins + medics
    medic = st.integers(0, medics - 1)
    target = st.none() | medic  # None: the broadcast
    return st.one_of(
        st.builds(MedicSends, st.just(org), medic),
        st.builds(AdminSends, st.just(org), st.integers(0, admins - 1), target),
        st.builds(MarksRead, st.just(org), st.integers(0, members - 1), target),
        # Medics reading (the broadcast above all) is what other medics must never learn about.
        st.builds(MarksRead, st.just(org), st.integers(admins, members - 1), target),
        st.builds(Renames, st.just(org), st.integers(0, members - 1), st.integers(0, members - 1)),
    )


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    shapes = draw(st.lists(st.tuples(st.integers(1, 2), st.integers(1, 4)), min_size=2, max_size=3))
    actions = [
        action
        for org, (admins, medics) in enumerate(shapes)
        for action in draw(st.lists(_actions_in(org, admins, medics), min_size=3, max_size=10))
    ]
    interleaved = draw(st.permutations(actions))  # orgs' streams are independent; the order across them is free
    return Plan(tuple(shapes), tuple(interleaved), draw(st.integers(1, 6)))


# --- the model: what the test knows happened -----------------------------------------------


@dataclass(frozen=True)
class Sent:
    id: str
    conversation_id: str
    sender_id: str
    content: str
    position: int


@dataclass
class Model:
    worlds: list[World]
    conversation_org: dict[str, str] = field(default_factory=dict)
    conversation_medic: dict[str, str | None] = field(default_factory=dict)
    users: dict[str, Member] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # user id -> current display name
    every_name: dict[str, set[str]] = field(default_factory=dict)  # user id -> every name they had
    messages: dict[str, Sent] = field(default_factory=dict)
    read_upto: dict[tuple[str, str], int] = field(default_factory=dict)  # (conversation, user) -> position
    renamed: set[str] = field(default_factory=set)  # users changed after the early cursors
    touched: set[str] = field(default_factory=set)  # conversations changed after the early cursors

    def __post_init__(self) -> None:
        for world in self.worlds:
            self.conversation_org[world.broadcast_id] = world.org_id
            self.conversation_medic[world.broadcast_id] = None
            for member in world.members:
                self.users[member.id] = member
                self.names[member.id] = member.display_name
                self.every_name[member.id] = {member.display_name}
            for medic in world.medics:
                assert medic.conversation_id is not None
                self.conversation_org[medic.conversation_id] = world.org_id
                self.conversation_medic[medic.conversation_id] = medic.id

    # The rules of design §3, restated for the test.

    def sees_conversation(self, viewer: Member, conversation_id: str) -> bool:
        if self.conversation_org[conversation_id] != viewer.org_id:
            return False
        medic = self.conversation_medic[conversation_id]
        return viewer.role is Role.ADMIN or medic is None or medic == viewer.id

    def sees_read_status(self, viewer: Member, conversation_id: str, user_id: str) -> bool:
        if not self.sees_conversation(viewer, conversation_id):
            return False
        is_direct = self.conversation_medic[conversation_id] is not None
        return viewer.role is Role.ADMIN or is_direct or user_id == viewer.id

    def sees_user(self, viewer: Member, user_id: str) -> bool:
        user = self.users[user_id]
        return user.org_id == viewer.org_id and (viewer.role is Role.ADMIN or user_id == viewer.id)

    # What a viewer should therefore get.

    def conversations_of(self, viewer: Member) -> set[str]:
        return {c for c in self.conversation_org if self.sees_conversation(viewer, c)}

    def messages_in(self, conversation_id: str) -> dict[str, Sent]:
        return {m.id: m for m in self.messages.values() if m.conversation_id == conversation_id}

    def messages_of(self, viewer: Member) -> set[str]:
        return {m.id for m in self.messages.values() if self.sees_conversation(viewer, m.conversation_id)}

    def read_statuses_of(self, viewer: Member) -> set[tuple[str, str]]:
        return {key for key in self.read_upto if self.sees_read_status(viewer, *key)}

    def users_of(self, viewer: Member) -> set[str]:
        return {u for u in self.users if self.sees_user(viewer, u)}

    def conversation_name(self, viewer: Member, conversation_id: str) -> str:
        medic = self.conversation_medic[conversation_id]
        if medic is None:
            return "Broadcast"
        return self.names[medic] if viewer.role is Role.ADMIN else "Admin"

    def sender_name(self, viewer: Member, sender_id: str) -> str:
        if viewer.role is Role.MEDIC and self.users[sender_id].role is Role.ADMIN:
            return "Admin"
        return self.names[sender_id]

    def status_of(self, viewer: Member, message: Sent) -> str:
        """`read` once another participant whose read status the viewer may see has read past it."""
        for (conversation_id, user_id), upto in self.read_upto.items():
            if (
                conversation_id == message.conversation_id
                and user_id != message.sender_id
                and upto >= message.position
                and self.sees_read_status(viewer, conversation_id, user_id)
            ):
                return "read"
        return "sent"

    def receipts(self, viewer: Member, message: Sent) -> tuple[set[str | None], set[str | None]] | None:
        """Who of the message's recipients (the other side) has read it, and who not; None when
        refused: a broadcast's receipts are the admins' alone. To a medic the admins are one
        reader without an id (None), who has read it once any admin has."""
        medic = self.conversation_medic[message.conversation_id]
        if medic is None and viewer.role is Role.MEDIC:
            return None
        world = next(w for w in self.worlds if w.org_id == self.conversation_org[message.conversation_id])
        if medic is None:
            side = {m.id for m in world.medics}
        elif message.sender_id == medic:
            side = {a.id for a in world.admins}
        else:
            side = {medic}
        side.discard(message.sender_id)
        read = {u for u in side if self.read_upto.get((message.conversation_id, u), 0) >= message.position}
        if viewer.role is Role.MEDIC and side & {a.id for a in world.admins}:
            return ({None}, set()) if read else (set(), {None})
        return set(read), set(side - read)

    def unread_count(self, viewer: Member, conversation_id: str) -> int:
        upto = self.read_upto.get((conversation_id, viewer.id), 0)
        return sum(
            1 for m in self.messages_in(conversation_id).values() if m.sender_id != viewer.id and m.position > upto
        )

    def newest_content(self, conversation_id: str) -> str | None:
        newest = max(self.messages_in(conversation_id).values(), key=lambda m: m.position, default=None)
        return None if newest is None else newest.content

    def secrets_for(self, viewer: Member) -> set[str]:
        """Strings that must not appear anywhere in a response to this viewer."""
        hidden: set[str] = set()
        for user_id, user in self.users.items():
            other_org = user.org_id != viewer.org_id
            other_medic = viewer.role is Role.MEDIC and user.role is Role.MEDIC and user_id != viewer.id
            admin_to_medic = viewer.role is Role.MEDIC and user.role is Role.ADMIN
            if other_org or other_medic or admin_to_medic:
                hidden |= {user.email, *self.every_name[user_id]}  # admins are just "Admin" to a medic
            if other_org or other_medic:
                hidden.add(user_id)
        hidden |= {world.org_id for world in self.worlds if world.org_id != viewer.org_id}
        hidden |= {c for c in self.conversation_org if not self.sees_conversation(viewer, c)}
        hidden |= {m.id for m in self.messages.values() if not self.sees_conversation(viewer, m.conversation_id)}
        return hidden


# --- HTTP helpers --------------------------------------------------------------------------


def _walk(tree: Any, key: str) -> Iterator[Any]:
    """Every value stored under `key`, anywhere in a JSON tree."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(tree, list):
        for item in tree:
            yield from _walk(item, key)


@dataclass
class Reader:
    """Runs one member's reads and keeps every body for the final raw scan."""

    client: httpx.AsyncClient
    member: Member
    bodies: list[str] = field(default_factory=list)

    async def get(self, path: str, expect: int = 200, **params: Any) -> Any:
        response = await self.client.get(path, headers=self.member.headers, params=params or None)
        assert response.status_code == expect, (self.member.role, path, params, response.text)
        self.bodies.append(response.text)
        return response.json()

    async def sync_all(self, cursor: str, limit: int) -> tuple[list[Any], str]:
        changes: list[Any] = []
        for _ in range(10_000):  # bounded: a feed that never ends is a failure, not a hang
            page = await self.get("/v1/sync", cursor=cursor, limit=limit)
            assert page["reset"] is False
            assert len(page["changes"]) <= limit
            changes += page["changes"]
            cursor = page["next_cursor"]
            if not page["has_more"]:
                return changes, cursor
        raise AssertionError("the sync feed never reported has_more = false")


def _not_found(response: httpx.Response, what: str) -> None:
    assert response.status_code == 404, response.text
    assert response.json() == {"error": {"code": "not_found", "message": f"{what} not found"}}


# --- the example ---------------------------------------------------------------------------


async def _make_worlds(stack: Stack, plan: Plan) -> list[World]:
    return [await stack.orgs.make(admins=admins, medics=medics) for admins, medics in plan.shapes]


async def _play(stack: Stack, model: Model, plan: Plan) -> None:
    """The legitimate actions; every one must succeed."""
    client = stack.client
    for number, action in enumerate(plan.actions):
        world = model.worlds[action.org]
        if isinstance(action, MedicSends | AdminSends):
            if isinstance(action, MedicSends):
                sender = world.medics[action.medic]
                target = sender.conversation_id
            else:
                sender = world.admins[action.admin]
                target = world.broadcast_id if action.medic is None else world.medics[action.medic].conversation_id
            assert target is not None
            content = f"{target} says #{number} ({uuid.uuid4().hex[:8]})"  # unique, names its conversation
            sent = await stack.orgs.send(sender, target, content)
            assert (sent["conversation_id"], sent["sender_id"], sent["content"]) == (target, sender.id, content)
            model.messages[sent["id"]] = Sent(sent["id"], target, sender.id, content, sent["position"])
            model.touched.add(target)
        elif isinstance(action, MarksRead):
            reader = world.members[action.member]
            if action.medic is None:
                target = world.broadcast_id
            elif reader.role is Role.MEDIC:
                target = reader.conversation_id
            else:
                target = world.medics[action.medic].conversation_id
            assert target is not None
            response = await client.post(f"/v1/conversations/{target}/read", headers=reader.headers)
            assert response.status_code == 200, response.text
            status = response.json()
            assert (status["conversation_id"], status["user_id"]) == (target, reader.id)
            newest = max((m.position for m in model.messages_in(target).values()), default=0)
            assert status["last_read_position"] == newest
            if status["last_read_at"] is not None:  # nothing to read leaves no status behind
                model.read_upto[(target, reader.id)] = status["last_read_position"]
        else:
            actor = world.members[action.actor]
            subject = world.members[action.target] if actor.role is Role.ADMIN else actor
            name = f"Renamed {uuid.uuid4().hex[:12]}"
            response = await client.patch(f"/v1/users/{subject.id}", json={"display_name": name}, headers=actor.headers)
            assert response.status_code == 200, response.text
            assert (response.json()["id"], response.json()["display_name"]) == (subject.id, name)
            model.names[subject.id] = name
            model.every_name[subject.id].add(name)
            model.renamed.add(subject.id)
            if subject.role is Role.MEDIC:
                assert subject.conversation_id is not None
                model.touched.add(subject.conversation_id)


def _sample(member: Member, targets: list[str], org_of: dict[str, str], kinds: list[list[str]], turn: int) -> list[str]:
    """All targets in the member's own org; elsewhere one target of each kind, rotating with `turn`."""
    chosen = [t for t in targets if org_of[t] == member.org_id]
    for kind in kinds:
        candidates = [t for t in kind if t in targets and org_of[t] != member.org_id]
        if candidates:
            chosen.append(candidates[turn % len(candidates)])
    return chosen


async def _intrude(stack: Stack, model: Model) -> None:
    """Writes nobody is entitled to: 404 when invisible, 403 only for a visible broadcast.

    Sends go to every conversation the member cannot see. Mark-read and rename share the
    send's lookup path, so they try everything in the member's own org and one target of
    each kind in every other org (rotating between members), to keep the example fast.
    """
    client = stack.client
    nowhere = str(uuid.uuid4())
    user_org = {user_id: user.org_id for user_id, user in model.users.items()}
    conversation_kinds = [[w.broadcast_id] for w in model.worlds]
    conversation_kinds += [[str(m.conversation_id) for m in w.medics] for w in model.worlds]
    user_kinds = [[a.id for a in w.admins] for w in model.worlds] + [[m.id for m in w.medics] for w in model.worlds]
    for turn, member in enumerate(model.users.values()):
        invisible = sorted(c for c in model.conversation_org if not model.sees_conversation(member, c))
        assert invisible, "with two or more orgs, everyone has conversations they cannot see"
        for conversation_id in [*invisible, nowhere]:
            body = {"conversation_id": conversation_id, "content": "intruder", "idempotency_key": uuid.uuid4().hex}
            _not_found(await client.post("/v1/messages", json=body, headers=member.headers), "conversation")
        for conversation_id in _sample(member, invisible, model.conversation_org, conversation_kinds, turn):
            read = await client.post(f"/v1/conversations/{conversation_id}/read", headers=member.headers)
            _not_found(read, "conversation")
        strangers = sorted(u for u in model.users if not model.sees_user(member, u))
        for user_id in [*_sample(member, strangers, user_org, user_kinds, turn), nowhere]:
            response = await client.patch(
                f"/v1/users/{user_id}", json={"display_name": "Intruder"}, headers=member.headers
            )
            _not_found(response, "user")
        if member.role is Role.MEDIC:
            world = next(w for w in model.worlds if w.org_id == member.org_id)
            body = {"conversation_id": world.broadcast_id, "content": "intruder", "idempotency_key": uuid.uuid4().hex}
            refused = await client.post("/v1/messages", json=body, headers=member.headers)
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"]["code"] == "forbidden"


def _check_changes(
    model: Model,
    member: Member,
    changes: list[Any],
    *,
    conversations: set[str],
    messages: set[str],
    read_statuses: set[tuple[str, str]],
    users: set[str],
) -> None:
    """A sync feed holds exactly the expected rows, once each, in position order, rendered for the member."""
    positions = [change["position"] for change in changes]
    assert positions == sorted(set(positions)), "changes must be in strictly increasing position order"
    by_type: dict[str, list[Any]] = {}
    for change in changes:
        assert change["position"] == change["data"]["position"]
        by_type.setdefault(change["type"], []).append(change["data"])
    assert set(by_type) <= {"conversation.updated", "message.created", "read_status.updated", "user.updated"}

    seen_conversations = [c["id"] for c in by_type.get("conversation.updated", [])]
    assert sorted(seen_conversations) == sorted(conversations)
    for conversation in by_type.get("conversation.updated", []):
        assert conversation["org_id"] == member.org_id
        assert conversation["name"] == model.conversation_name(member, conversation["id"])

    seen_messages = [m["id"] for m in by_type.get("message.created", [])]
    assert sorted(seen_messages) == sorted(messages)
    for message in by_type.get("message.created", []):
        sent = model.messages[message["id"]]
        assert (message["conversation_id"], message["content"]) == (sent.conversation_id, sent.content)
        assert message["sender_name"] == model.sender_name(member, sent.sender_id)
        assert message["status"] == model.status_of(member, sent)

    seen_statuses = [(s["conversation_id"], s["user_id"]) for s in by_type.get("read_status.updated", [])]
    assert sorted(seen_statuses) == sorted(read_statuses)
    for status in by_type.get("read_status.updated", []):
        assert status["last_read_position"] == model.read_upto[(status["conversation_id"], status["user_id"])]

    seen_users = [u["id"] for u in by_type.get("user.updated", [])]
    assert sorted(seen_users) == sorted(users)
    for user in by_type.get("user.updated", []):
        assert user["org_id"] == member.org_id
        assert user["display_name"] == model.names[user["id"]]


async def _check_reads(
    stack: Stack, model: Model, member: Member, early_cursor: str, sync_limit: int, early_pull: int
) -> None:
    reader = Reader(stack.client, member)
    visible = model.conversations_of(member)
    if member.role is Role.MEDIC:  # the positive side, stated plainly
        world = next(w for w in model.worlds if w.org_id == member.org_id)
        assert visible == {member.conversation_id, world.broadcast_id}
    else:
        assert visible == {c for c, org in model.conversation_org.items() if org == member.org_id}

    me = await reader.get("/v1/me")
    assert (me["user"]["id"], me["user"]["org_id"], me["org"]["id"]) == (member.id, member.org_id, member.org_id)
    assert me["user"]["display_name"] == model.names[member.id]

    directory = (await reader.get("/v1/users"))["users"]
    assert sorted(u["id"] for u in directory) == sorted(model.users_of(member))
    for user in directory:
        assert user["org_id"] == member.org_id
        assert user["display_name"] == model.names[user["id"]]

    listing = (await reader.get("/v1/conversations"))["conversations"]
    assert sorted(c["id"] for c in listing) == sorted(visible)
    for conversation in listing:
        cid = conversation["id"]
        assert conversation["org_id"] == member.org_id
        assert conversation["medic_id"] == model.conversation_medic[cid]
        assert conversation["name"] == model.conversation_name(member, cid)
        assert conversation["last_message_preview"] == model.newest_content(cid)
        assert conversation["unread_count"] == model.unread_count(member, cid)
        assert conversation["last_read_position"] == model.read_upto.get((cid, member.id), 0)

    invisible_bodies = set()
    for cid in sorted(model.conversation_org):
        path = f"/v1/conversations/{cid}/messages"
        if cid not in visible:
            response = await stack.client.get(path, headers=member.headers, params={"limit": THREAD_LIMIT})
            _not_found(response, "conversation")
            invisible_bodies.add(response.text)
            for sent in model.messages_in(cid).values():
                receipts = await stack.client.get(f"{path}/{sent.id}/receipts", headers=member.headers)
                _not_found(receipts, "conversation")
                invisible_bodies.add(receipts.text)
            continue
        page = await reader.get(path, limit=THREAD_LIMIT)
        assert page["has_more"] is False
        expected = model.messages_in(cid)
        assert [m["id"] for m in page["messages"]] == sorted(expected, key=lambda m: expected[m].position)
        for message in page["messages"]:
            sent = expected[message["id"]]
            assert (message["conversation_id"], message["content"], message["sender_id"]) == (
                cid,
                sent.content,
                sent.sender_id,
            )
            assert message["sender_name"] == model.sender_name(member, sent.sender_id)
            assert message["status"] == model.status_of(member, sent)
            await _check_receipts(reader, model, sent)
    nowhere = await stack.client.get(f"/v1/conversations/{uuid.uuid4()}/messages", headers=member.headers)
    _not_found(nowhere, "conversation")
    assert invisible_bodies <= {nowhere.text}, "an invisible conversation must look exactly like a missing one"

    everything: dict[str, Any] = dict(
        conversations=visible,
        messages=model.messages_of(member),
        read_statuses=model.read_statuses_of(member),
        users=model.users_of(member),
    )
    snapshot = await reader.get("/v1/sync")
    assert snapshot["reset"] is True and snapshot["has_more"] is False
    _check_changes(model, member, snapshot["changes"], **everything)

    from_start, _ = await reader.sync_all(str(Cursor.start(member.org_id)), limit=500)
    _check_changes(model, member, from_start, **everything)

    since_early, last_cursor = await reader.sync_all(early_cursor, limit=sync_limit)
    _check_changes(
        model,
        member,
        since_early,
        conversations=visible & model.touched,
        messages=model.messages_of(member),
        read_statuses=model.read_statuses_of(member),
        users=model.users_of(member) & model.renamed,
    )
    assert last_cursor == snapshot["next_cursor"], "a finished incremental sync ends at the stream's head"
    tail = await reader.get("/v1/sync", cursor=last_cursor)
    assert (tail["changes"], tail["has_more"], tail["next_cursor"]) == ([], False, last_cursor)

    await _check_watermelon(reader, model, member, early_pull)

    # Nothing outside what the member may see, anywhere in anything they were sent.
    trees = [json.loads(text) for text in reader.bodies]
    assert set(_walk(trees, "org_id")) == {member.org_id}
    assert set(_walk(trees, "conversation_id")) <= visible
    assert set(_walk(trees, "medic_id")) <= {model.conversation_medic[c] for c in visible}
    world = next(w for w in model.worlds if w.org_id == member.org_id)
    allowed_people = {u.id for u in world.members} if member.role is Role.ADMIN else {a.id for a in world.admins}
    allowed_people.add(member.id)
    people = set(_walk(trees, "user_id")) - {None}  # None: in a medic's receipts, the admins as one
    assert people | set(_walk(trees, "sender_id")) <= allowed_people
    secrets = model.secrets_for(member)
    for text in reader.bodies:
        leaked = sorted(s for s in secrets if s in text)
        assert not leaked, f"{member.role} {member.id} was sent {leaked}"


# --- the WatermelonDB endpoint: the same rules through `synchronize()`'s pull and push ---------

WATERMELON = "/v1/watermelon/sync"


def _first_pull() -> dict[str, str]:
    return {"last_pulled_at": "null", "schema_version": "5", "migration": "null"}


def _new_record(conversation_id: str) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex[:16],
        "conversation_id": conversation_id,
        "content": "intruder",
        "_status": "created",
    }


async def _intrude_by_watermelon(stack: Stack, model: Model, early_pulls: dict[str, int]) -> None:
    """A push of messages into every conversation the member may not write, and of read marks on
    every one they may not see: each message refused by id, nothing applied (the reads check
    every thread and read status afterwards)."""
    for member in model.users.values():
        invisible = sorted(c for c in model.conversation_org if not model.sees_conversation(member, c))
        unwritable = list(invisible)
        if member.role is Role.MEDIC:
            unwritable.append(next(w.broadcast_id for w in model.worlds if w.org_id == member.org_id))
        records = [_new_record(c) for c in [*unwritable, str(uuid.uuid4())]]
        body = {
            "messages": {"created": records, "updated": [], "deleted": sorted(model.messages)},
            "conversations": {
                "created": [],
                "updated": [{"id": c, "unread_count": 0, "_status": "updated"} for c in invisible],
                "deleted": invisible,
            },
        }
        response = await stack.client.post(
            WATERMELON, params={"last_pulled_at": str(early_pulls[member.id])}, json=body, headers=member.headers
        )
        assert response.status_code == 200, response.text
        rejected = response.json()["experimentalRejectedIds"]
        assert sorted(rejected["messages"]) == sorted(r["id"] for r in records)
        assert rejected["conversations"] == []


def _check_watermelon_rows(model: Model, member: Member, tables: dict[str, Any], labels: dict[str, Any]) -> None:
    """Each table has its three arrays; the rows under each label are exactly the expected ones
    (messages by `server_id`), rendered for the member."""
    for table in ("conversations", "messages"):
        assert set(tables[table]) == {"created", "updated", "deleted"}
        assert tables[table]["deleted"] == []
    for label in ("created", "updated"):
        conversations = tables["conversations"][label]
        assert sorted(c["id"] for c in conversations) == sorted(labels["conversations"][label])
        for conversation in conversations:
            cid = conversation["id"]
            assert (conversation["server_id"], conversation["org_id"]) == (cid, member.org_id)
            assert conversation["medic_id"] == model.conversation_medic[cid]
            assert conversation["participant_name"] == model.conversation_name(member, cid)
            assert conversation["unread_count"] == model.unread_count(member, cid)
        messages = tables["messages"][label]
        assert sorted(m["server_id"] for m in messages) == sorted(labels["messages"][label])
        for message in messages:
            sent = model.messages[message["server_id"]]
            assert (message["conversation_id"], message["content"]) == (sent.conversation_id, sent.content)
            assert message["sender_name"] == model.sender_name(member, sent.sender_id)
            assert message["status"] == model.status_of(member, sent)


async def _check_watermelon(reader: Reader, model: Model, member: Member, early_pull: int) -> None:
    visible = model.conversations_of(member)
    messages = model.messages_of(member)
    own = {m for m in messages if model.messages[m].sender_id == member.id}
    first = await reader.get(WATERMELON, **_first_pull())
    labels: dict[str, Any] = {
        "conversations": {"created": visible, "updated": set()},
        "messages": {"created": messages, "updated": set()},
    }
    _check_watermelon_rows(model, member, first["changes"], labels)

    since = await reader.get(WATERMELON, **{**_first_pull(), "last_pulled_at": str(early_pull)})
    assert since["timestamp"] == first["timestamp"]
    if member.id in model.renamed:  # their own account changed: the whole visible set, replacing
        assert since["experimentalStrategy"] == "replacement"
        labels = {
            "conversations": {"created": set(), "updated": visible},
            "messages": {"created": set(), "updated": messages},
        }
    else:
        assert "experimentalStrategy" not in since
        read_by_me = {c for c, user_id in model.read_upto if user_id == member.id}
        labels = {
            "conversations": {"created": set(), "updated": visible & (model.touched | read_by_me)},
            "messages": {"created": messages - own, "updated": own},  # own rows never as `created`
        }
    _check_watermelon_rows(model, member, since["changes"], labels)


async def _check_receipts(reader: Reader, model: Model, sent: Sent) -> None:
    path = f"/v1/conversations/{sent.conversation_id}/messages/{sent.id}/receipts"
    want = model.receipts(reader.member, sent)
    if want is None:
        refused = await reader.get(path, expect=403)
        assert refused["error"]["code"] == "forbidden"
        return
    got = await reader.get(path)
    read, unread = want
    assert ({r["user_id"] for r in got["read"]}, {r["user_id"] for r in got["unread"]}) == (read, unread)
    assert (got["read_count"], got["recipient_count"]) == (len(read), len(read) + len(unread))
    for person in got["read"] + got["unread"]:
        name = "Admin" if person["user_id"] is None else model.sender_name(reader.member, person["user_id"])
        assert person["display_name"] == name


async def _run_example(stack: Stack, plan: Plan) -> None:
    worlds = await _make_worlds(stack, plan)
    model = Model(worlds)
    early: dict[str, str] = {}
    early_pulls: dict[str, int] = {}  # WatermelonDB's `timestamp`, before anything happened
    for member in model.users.values():
        response = await stack.client.get("/v1/sync", headers=member.headers)
        assert response.status_code == 200, response.text
        early[member.id] = response.json()["next_cursor"]
        pulled = await stack.client.get(WATERMELON, params=_first_pull(), headers=member.headers)
        assert pulled.status_code == 200, pulled.text
        early_pulls[member.id] = pulled.json()["timestamp"]
    await _play(stack, model, plan)
    await _intrude(stack, model)
    await _intrude_by_watermelon(stack, model, early_pulls)
    await intrude_on_lifecycle(stack.client, list(model.users.values()), model.names)
    for member in model.users.values():
        await _check_reads(stack, model, member, early[member.id], plan.sync_limit, early_pulls[member.id])


# No shrink phase: an example takes about a second, and shrinking would rerun hundreds of them
# (Hypothesis allows itself five minutes), past the suite's timeout. A failure still prints
# the whole falsifying Plan, which replays deterministically; add Phase.shrink to minimise it.
@settings(
    max_examples=20,
    deadline=None,
    # `stack` is function-scoped only to give each test its own client address; the app and
    # its data are the session's, shared by every example as intended.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(plan=plans())
async def test_nobody_sees_outside_their_org_or_another_medics_conversation(stack: Stack, plan: Plan) -> None:
    async with asyncio.timeout(EXAMPLE_TIMEOUT_SECONDS):
        await _run_example(stack, plan)
