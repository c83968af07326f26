"""The visibility policy: each viewer's store scope and the Python predicates give the same answers.

`visibility.py` states every rule twice, once as the store `Scope` a viewer reads with (which
the store turns into SQL) and once as a predicate on a loaded row (checks, fan-out). Here both
forms judge the same rows: the scope runs against the real database through the store
functions that the services use, and the predicate runs over every row of every org (read
org by org with the whole-org scope), loaded in the same transaction. The rows are the whole
session database (random worlds made here plus whatever earlier tests left), so the
comparison also covers orgs the viewer does not belong to.

Then unit tests of the names a viewer is shown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, select

from sitecomms.protocol.enums import ConversationType, Role
from sitecomms.server.services import visibility
from sitecomms.server.services.errors import Forbidden, NotFound
from sitecomms.server.services.visibility import Viewer
from sitecomms.store import conversations, messages, reads, schema, users
from sitecomms.store.rows import ConversationRow, ReadStatusRow, UserRow
from sitecomms.store.scopes import Scope
from tests.conftest import Stack
from tests.sql import execute
from tests.support import Member, World

EVERYTHING = 10**9  # a `limit` no test database reaches
EXAMPLE_TIMEOUT_SECONDS = 60

# --- both forms against the database ---------------------------------------------------------


@dataclass(frozen=True)
class Verdicts:
    """What one form of the rules lets a viewer see, as sets of keys."""

    conversations: set[str]
    messages: set[str]
    read_statuses: set[tuple[str, str]]
    users: set[str]


def _by_scope(conn: Connection, viewer: Viewer) -> list[Verdicts]:
    """The viewer's scope, through every store function that takes one (with `after=0`: all rows)."""
    scope = visibility.viewer_scope(viewer)
    listed = Verdicts(
        conversations={c.id for c in conversations.list_conversations(conn, scope)},
        messages={m.id for m in messages.messages_changed_since(conn, scope, after=0, limit=EVERYTHING)},
        read_statuses={(s.conversation_id, s.user_id) for s in reads.read_statuses_in(conn, scope)},
        users={u.id for u in users.list_users(conn, scope)},
    )
    changed = Verdicts(
        conversations={c.id for c in conversations.conversations_changed_since(conn, scope, after=0, limit=EVERYTHING)},
        messages=listed.messages,
        read_statuses={
            (s.conversation_id, s.user_id)
            for s in reads.read_statuses_changed_since(conn, scope, after=0, limit=EVERYTHING)
        },
        users={u.id for u in users.users_changed_since(conn, scope, after=0, limit=EVERYTHING)},
    )
    return [listed, changed]


def _by_predicate(conn: Connection, viewer: Viewer) -> Verdicts:
    """The predicates, applied to every row of every table (every org's, whole)."""
    every_org = [visibility.org_scope(org_id) for org_id in execute(conn, select(schema.orgs.c.id)).scalars()]
    every_conversation = {c.id: c for org in every_org for c in conversations.list_conversations(conn, org)}
    every_message = [
        m for org in every_org for m in messages.messages_changed_since(conn, org, after=0, limit=EVERYTHING)
    ]
    every_status = [s for org in every_org for s in reads.read_statuses_in(conn, org)]
    every_user = [u for org in every_org for u in users.list_users(conn, org)]
    assert len(every_org) >= 2 and every_message and every_status
    return Verdicts(
        conversations={c.id for c in every_conversation.values() if visibility.can_see_conversation(viewer, c)},
        messages={
            m.id
            for m in every_message
            if visibility.can_see_conversation(viewer, every_conversation[m.conversation_id])
        },
        read_statuses={
            (s.conversation_id, s.user_id)
            for s in every_status
            if visibility.can_see_read_status(viewer, every_conversation[s.conversation_id], s)
        },
        users={u.id for u in every_user if visibility.can_see_user(viewer, u)},
    )


def _both_forms(conn: Connection, viewers: list[Viewer]) -> list[tuple[Viewer, list[Verdicts], Verdicts]]:
    """Both forms for every viewer, in one snapshot so that they judge the same rows."""
    return [(viewer, _by_scope(conn, viewer), _by_predicate(conn, viewer)) for viewer in viewers]


# --- a small random world --------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    admins: int
    medics: int
    readers: tuple[bool, ...]  # per member (admins first): do they mark what they see as read?


@st.composite
def shapes(draw: st.DrawFn) -> list[Shape]:
    result = []
    for _ in range(draw(st.integers(2, 3))):
        admins, medics = draw(st.integers(1, 2)), draw(st.integers(2, 3))
        readers = draw(st.lists(st.booleans(), min_size=admins + medics, max_size=admins + medics))
        result.append(Shape(admins, medics, tuple(readers)))
    return result


async def _make(stack: Stack, shape: Shape) -> World:
    """An org where every conversation has a message, and the chosen members have read what they see.

    Every medic of the org reads the broadcast, so that medics' read statuses in the broadcast,
    which other medics must not see, always exist.
    """
    world = await stack.orgs.make(admins=shape.admins, medics=shape.medics)
    admin = world.admins[0]
    await stack.orgs.send(admin, world.broadcast_id, "to everyone")
    for medic in world.medics:
        assert medic.conversation_id is not None
        await stack.orgs.send(medic, medic.conversation_id, "from the field")
    for member, reads_all in zip(world.members, shape.readers, strict=True):
        targets = [world.broadcast_id] if member.role is Role.MEDIC else []
        if reads_all:
            targets += [str(m.conversation_id) for m in world.medics if member.role is Role.ADMIN or m.id == member.id]
        for target in targets:
            response = await stack.client.post(f"/v1/conversations/{target}/read", headers=member.headers)
            assert response.status_code == 200, response.text
            assert response.json()["last_read_at"] is not None
    return world


def _odd_viewers(worlds: list[World]) -> list[Viewer]:
    """Viewers no token would name; the two forms must agree on them all the same."""
    first, second = worlds[0], worlds[1]
    return [
        Viewer(str(uuid.uuid4()), str(uuid.uuid4()), Role.ADMIN),  # an org that does not exist
        Viewer(str(uuid.uuid4()), first.org_id, Role.MEDIC),  # a user who does not exist
        Viewer(str(uuid.uuid4()), first.org_id, Role.ADMIN),
        Viewer(second.medics[0].id, first.org_id, Role.MEDIC),  # a medic, in another org than theirs
        Viewer(first.medics[0].id, first.org_id, Role.ADMIN),  # a medic, with the admin role
    ]


@settings(
    max_examples=8,
    deadline=None,
    # `stack` is function-scoped only to give each test its own client address; the app and
    # its data are the session's, shared by every example as intended.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # see test_isolation: no slow shrinking
)
@given(world_shapes=shapes())
async def test_scopes_and_predicates_agree(stack: Stack, world_shapes: list[Shape]) -> None:
    async with asyncio.timeout(EXAMPLE_TIMEOUT_SECONDS):
        worlds = [await _make(stack, shape) for shape in world_shapes]
        members: list[Member] = [m for world in worlds for m in world.members]
        odd = _odd_viewers(worlds)
        viewers = [*(m.viewer for m in members), *odd]
        results = await stack.db.read("test_visibility_forms", _both_forms, viewers)
    assert [viewer for viewer, _, _ in results] == viewers
    for viewer, by_scope, by_predicate in results:
        for verdicts in by_scope:
            assert verdicts == by_predicate, viewer

    # The comparison is only worth something if the rules let some things through and keep
    # others out: check a few answers outright.
    answers = {viewer: by_predicate for viewer, _, by_predicate in results}
    first = worlds[0]
    medic, neighbour, admin = first.medics[0], first.medics[1], first.admins[0]
    seen_by_medic, seen_by_admin = answers[medic.viewer], answers[admin.viewer]
    assert seen_by_medic.conversations == {first.broadcast_id, medic.conversation_id}
    assert seen_by_admin.conversations == {first.broadcast_id, *(m.conversation_id for m in first.medics)}
    assert seen_by_medic.users == {medic.id}
    assert seen_by_admin.users == {m.id for m in first.members}
    assert (first.broadcast_id, medic.id) in seen_by_medic.read_statuses
    assert (first.broadcast_id, neighbour.id) not in seen_by_medic.read_statuses
    assert (first.broadcast_id, neighbour.id) in seen_by_admin.read_statuses
    assert answers[odd[0]] == Verdicts(set(), set(), set(), set())  # an org that does not exist


# --- names as a viewer sees them -------------------------------------------------------------

ORG = "org-1"
MEDIC = Viewer("medic-1", ORG, Role.MEDIC)
OTHER_MEDIC = Viewer("medic-2", ORG, Role.MEDIC)
ADMIN = Viewer("admin-1", ORG, Role.ADMIN)
STRANGER = Viewer("admin-9", "org-2", Role.ADMIN)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _conversation(type: ConversationType, medic_id: str | None, medic_name: str | None) -> ConversationRow:
    return ConversationRow(
        id=str(uuid.uuid4()),
        org_id=ORG,
        type=type.value,
        medic_id=medic_id,
        medic_name=medic_name,
        last_message_at=None,
        last_message_preview=None,
        last_message_position=None,
        created_at=NOW,
        position=1,
    )


DIRECT = _conversation(ConversationType.DIRECT, MEDIC.user_id, "Dana Field")
BROADCAST = _conversation(ConversationType.BROADCAST, None, None)


@pytest.mark.parametrize("viewer", [MEDIC, ADMIN], ids=["medic", "admin"])
def test_the_broadcast_is_called_broadcast(viewer: Viewer) -> None:
    assert visibility.conversation_name(viewer, BROADCAST) == "Broadcast"


def test_a_medic_sees_their_direct_conversation_as_admin() -> None:
    assert visibility.conversation_name(MEDIC, DIRECT) == "Admin"


def test_an_admin_sees_a_direct_conversation_under_the_medics_name() -> None:
    assert visibility.conversation_name(ADMIN, DIRECT) == "Dana Field"


def test_an_admin_sees_a_nameless_medic_as_medic() -> None:
    nameless = _conversation(ConversationType.DIRECT, MEDIC.user_id, None)
    assert visibility.conversation_name(ADMIN, nameless) == "Medic"


@pytest.mark.parametrize("role", [Role.ADMIN, "admin"], ids=["enum", "stored-string"])
def test_a_medic_sees_every_admin_as_admin(role: str) -> None:
    assert visibility.sender_name(MEDIC, role, "Alex Boss") == "Admin"
    assert visibility.sender_name(MEDIC, role, "Sam Chief") == "Admin"


@pytest.mark.parametrize("role", [Role.MEDIC, "medic"], ids=["enum", "stored-string"])
def test_a_medic_sees_a_medics_own_name(role: str) -> None:
    assert visibility.sender_name(MEDIC, role, "Dana Field") == "Dana Field"


@pytest.mark.parametrize("role", [Role.ADMIN, Role.MEDIC, "admin", "medic"])
def test_an_admin_sees_real_names(role: str) -> None:
    assert visibility.sender_name(ADMIN, role, "Alex Boss") == "Alex Boss"


# --- the predicates on hand-made rows, including write rights --------------------------------


def test_conversation_rights() -> None:
    elsewhere = dataclasses.replace(DIRECT, id="c-9", org_id="org-2", medic_id="medic-9")
    neighbours = _conversation(ConversationType.DIRECT, OTHER_MEDIC.user_id, "Other")
    table = {
        # viewer, conversation: (may see, may write)
        (MEDIC, DIRECT): (True, True),
        (MEDIC, BROADCAST): (True, False),
        (MEDIC, neighbours): (False, False),
        (MEDIC, elsewhere): (False, False),
        (ADMIN, DIRECT): (True, True),
        (ADMIN, BROADCAST): (True, True),
        (ADMIN, neighbours): (True, True),
        (ADMIN, elsewhere): (False, False),
        (STRANGER, DIRECT): (False, False),
        (STRANGER, BROADCAST): (False, False),
    }
    for (viewer, conversation), (sees, writes) in table.items():
        assert visibility.can_see_conversation(viewer, conversation) is sees, (viewer, conversation)
        assert visibility.can_write_conversation(viewer, conversation) is writes, (viewer, conversation)


def test_require_says_not_found_for_the_invisible_and_forbidden_only_for_the_visible() -> None:
    neighbours = _conversation(ConversationType.DIRECT, OTHER_MEDIC.user_id, "Other")
    assert visibility.require_writable(MEDIC, DIRECT) is DIRECT
    assert visibility.require_visible(MEDIC, BROADCAST) is BROADCAST
    with pytest.raises(Forbidden):
        visibility.require_writable(MEDIC, BROADCAST)
    for conversation in (neighbours, None):
        with pytest.raises(NotFound):
            visibility.require_visible(MEDIC, conversation)
        with pytest.raises(NotFound):
            visibility.require_writable(MEDIC, conversation)
    with pytest.raises(NotFound):
        visibility.require_writable(STRANGER, BROADCAST)


def test_read_statuses_in_the_broadcast_stay_private_between_medics() -> None:
    def status(conversation: ConversationRow, user_id: str) -> ReadStatusRow:
        return ReadStatusRow(conversation.id, user_id, ORG, 1, NOW, 2)

    assert visibility.can_see_read_status(MEDIC, BROADCAST, status(BROADCAST, MEDIC.user_id))
    assert not visibility.can_see_read_status(MEDIC, BROADCAST, status(BROADCAST, OTHER_MEDIC.user_id))
    assert visibility.can_see_read_status(MEDIC, DIRECT, status(DIRECT, ADMIN.user_id))
    assert visibility.can_see_read_status(ADMIN, BROADCAST, status(BROADCAST, OTHER_MEDIC.user_id))
    assert not visibility.can_see_read_status(STRANGER, BROADCAST, status(BROADCAST, STRANGER.user_id))


def test_users_see_themselves_and_admins_see_their_org() -> None:
    def user(user_id: str, org_id: str = ORG) -> UserRow:
        return UserRow(user_id, org_id, f"{user_id}@x.test", user_id, "medic", "hash", NOW, 1, True, None)

    assert visibility.can_see_user(MEDIC, user(MEDIC.user_id))
    assert not visibility.can_see_user(MEDIC, user(OTHER_MEDIC.user_id))
    assert visibility.can_see_user(ADMIN, user(OTHER_MEDIC.user_id))
    assert not visibility.can_see_user(ADMIN, user("medic-9", "org-2"))
    assert not visibility.can_see_user(MEDIC, user(MEDIC.user_id, "org-2"))  # same id, wrong org


# --- fan-out audience: a superset of who may see --------------------------------------------

_IDS = st.sampled_from(["medic-1", "medic-2", "admin-1", "admin-9"])
_ORGS = st.sampled_from([ORG, "org-2"])


@st.composite
def _viewers(draw: st.DrawFn) -> Viewer:
    return Viewer(draw(_IDS), draw(_ORGS), draw(st.sampled_from([Role.ADMIN, Role.MEDIC])))


@st.composite
def _conversations(draw: st.DrawFn) -> ConversationRow:
    if draw(st.booleans()):
        conversation = _conversation(ConversationType.BROADCAST, None, None)
    else:
        conversation = _conversation(ConversationType.DIRECT, draw(_IDS), "Someone")
    return dataclasses.replace(conversation, org_id=draw(_ORGS))


@settings(max_examples=300, deadline=None)
@given(viewer=_viewers(), conversation=_conversations(), other=_IDS, user_org=_ORGS)
def test_the_medic_audience_covers_every_medic_who_may_see(
    viewer: Viewer, conversation: ConversationRow, other: str, user_org: str
) -> None:
    """Fan-out offers a change only to admins and `medic_audience`: no medic who may see it is left out."""

    def reaches(audience: str | None) -> bool:
        return viewer.is_admin or audience == visibility.EVERY_MEDIC or audience == viewer.user_id

    status = ReadStatusRow(conversation.id, other, conversation.org_id, 1, NOW, 2)
    user = UserRow(other, user_org, f"{other}@x.test", other, "medic", "hash", NOW, 1, True, None)
    in_conversation = visibility.medic_audience(conversation)
    if visibility.can_see_conversation(viewer, conversation):
        assert reaches(in_conversation)
    if visibility.can_see_read_status(viewer, conversation, status):
        assert reaches(in_conversation)
    if visibility.can_see_user(viewer, user):
        assert reaches(visibility.medic_audience(None, user))
    assert visibility.medic_audience(None) is None


# --- scopes: plain data the store understands ------------------------------------------------


def test_an_admin_reads_with_the_whole_org_scope_the_feed_uses() -> None:
    """So an admin's pull sync and the live feed's org-wide read run the same statements."""
    assert visibility.viewer_scope(ADMIN) == visibility.org_scope(ORG) == Scope(ORG)
    assert visibility.viewer_scope(ADMIN).whole_org


def test_a_medic_reads_with_a_scope_of_their_own() -> None:
    assert visibility.viewer_scope(MEDIC) == Scope(ORG, medic_id=MEDIC.user_id)
    assert not visibility.viewer_scope(MEDIC).whole_org
    assert visibility.viewer_scope(STRANGER).org_id == "org-2"


# --- receipts: shown only to whoever may see every recipient's read status -----------------


@st.composite
def _org_users(draw: st.DrawFn) -> list[UserRow]:
    people = draw(st.lists(st.tuples(_IDS, st.sampled_from(["admin", "medic"]), st.booleans(), _ORGS), max_size=6))
    return [UserRow(i, org, f"{i}@x.test", i, role, "hash", NOW, 1, active, None) for i, role, active, org in people]


@settings(max_examples=300, deadline=None)
@given(viewer=_viewers(), conversation=_conversations(), sender=_IDS, org_users=_org_users())
def test_receipts_never_show_a_read_status_the_viewer_may_not_see(
    viewer: Viewer, conversation: ConversationRow, sender: str, org_users: list[UserRow]
) -> None:
    recipients = visibility.message_recipients(conversation, sender, org_users)
    for user in recipients:
        assert user.active and user.id != sender and user.org_id == conversation.org_id
        if conversation.type == ConversationType.BROADCAST:
            assert user.role == Role.MEDIC
        elif sender == conversation.medic_id:
            assert user.role == Role.ADMIN
        else:
            assert user.id == conversation.medic_id
    if visibility.can_see_receipts(viewer, conversation):
        for user in recipients:
            status = ReadStatusRow(conversation.id, user.id, conversation.org_id, 1, NOW, 2)
            assert visibility.can_see_read_status(viewer, conversation, status), (viewer, user)
    else:
        assert not viewer.is_admin or not visibility.can_see_conversation(viewer, conversation)


def test_receipts_of_the_broadcast_are_the_admins_and_a_direct_conversations_both_sides() -> None:
    assert visibility.can_see_receipts(ADMIN, BROADCAST)
    assert not visibility.can_see_receipts(MEDIC, BROADCAST)
    assert visibility.can_see_receipts(MEDIC, DIRECT) and visibility.can_see_receipts(ADMIN, DIRECT)
    assert not visibility.can_see_receipts(STRANGER, BROADCAST)
    with pytest.raises(Forbidden):
        visibility.require_receipts_visible(MEDIC, BROADCAST)
    with pytest.raises(NotFound):
        visibility.require_receipts_visible(STRANGER, DIRECT)
    assert visibility.require_receipts_visible(MEDIC, DIRECT) is DIRECT
