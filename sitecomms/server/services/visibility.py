"""Who may see and write what: the row-level security of SiteComms, in one place.

The rules (design §3):
- nobody sees anything of another organisation;
- an admin sees and writes every conversation of their org (broadcasts are written by admins
  only);
- a medic sees their own direct conversation and the org's broadcast, and writes only in
  their direct conversation;
- read statuses follow their conversation, except that in a broadcast a medic sees only their
  own (other medics stay invisible to each other);
- an admin sees every user of the org; a medic sees only themself;
- who has read a message (its receipts) is shown to whoever may see every recipient's read
  status: in a broadcast admins only (a medic learns no other medic's read state, not even as
  a count); in a direct conversation either side.
Anything not visible is reported as not found, never as forbidden, so existence does not leak;
a visible conversation the viewer may not write is forbidden.

Each rule exists twice: as the store `Scope` a viewer reads with (plain data: the whole org
for an admin, or "this medic" for a medic; the store turns each shape into its
statements) and as a predicate on a loaded row (for checks and realtime fan-out); the tests
hold the two forms to the same answers. Names as a viewer sees them are here too, because which name a
viewer may learn is part of the same policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from sitecomms.protocol.enums import ConversationType, Role
from sitecomms.server.services.errors import Forbidden, NotFound
from sitecomms.store.rows import ConversationRow, ReadStatusRow, UserRow
from sitecomms.store.scopes import Scope

ADMIN_TEAM_NAME = "Admin"
BROADCAST_NAME = "Broadcast"


@dataclass(frozen=True, slots=True)
class Viewer:
    """The authenticated caller: their user, org and role as the database has them, and the
    session (signed-in device) the request came from ("" for the operator's own calls)."""

    user_id: str
    org_id: str
    role: Role
    session_id: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


# --- conversations -------------------------------------------------------------------------


def can_see_conversation(viewer: Viewer, conversation: ConversationRow) -> bool:
    if conversation.org_id != viewer.org_id:
        return False
    if viewer.is_admin:
        return True
    return conversation.type == ConversationType.BROADCAST or conversation.medic_id == viewer.user_id


def can_write_conversation(viewer: Viewer, conversation: ConversationRow) -> bool:
    if not can_see_conversation(viewer, conversation):
        return False
    return viewer.is_admin or conversation.type == ConversationType.DIRECT


def require_visible(viewer: Viewer, conversation: ConversationRow | None) -> ConversationRow:
    if conversation is None or not can_see_conversation(viewer, conversation):
        raise NotFound("conversation not found")
    return conversation


def require_writable(viewer: Viewer, conversation: ConversationRow | None) -> ConversationRow:
    conversation = require_visible(viewer, conversation)
    if not can_write_conversation(viewer, conversation):
        raise Forbidden("only admins post to the broadcast conversation")
    return conversation


# --- read statuses -------------------------------------------------------------------------


def can_see_read_status(viewer: Viewer, conversation: ConversationRow, status: ReadStatusRow) -> bool:
    if not can_see_conversation(viewer, conversation):
        return False
    return viewer.is_admin or conversation.type == ConversationType.DIRECT or status.user_id == viewer.user_id


# --- receipts ------------------------------------------------------------------------------


def can_see_receipts(viewer: Viewer, conversation: ConversationRow) -> bool:
    if not can_see_conversation(viewer, conversation):
        return False
    return viewer.is_admin or conversation.type == ConversationType.DIRECT


def require_receipts_visible(viewer: Viewer, conversation: ConversationRow | None) -> ConversationRow:
    conversation = require_visible(viewer, conversation)
    if not can_see_receipts(viewer, conversation):
        raise Forbidden("only admins see who has read a broadcast")
    return conversation


def message_recipients(conversation: ConversationRow, sender_id: str, org_users: list[UserRow]) -> list[UserRow]:
    """The recipients of a message: the other side of its conversation, active, never the sender.

    Broadcast: the org's medics. Direct: the medic for an admin's message, the org's admins for
    the medic's. (The same definition as `web/static/receipts.js` counts with.)"""
    return [
        user
        for user in org_users
        if user.org_id == conversation.org_id
        and user.active
        and user.id != sender_id
        and _on_the_other_side(conversation, sender_id, user)
    ]


def _on_the_other_side(conversation: ConversationRow, sender_id: str, user: UserRow) -> bool:
    if conversation.type == ConversationType.BROADCAST:
        return user.role == Role.MEDIC
    if sender_id == conversation.medic_id:
        return user.role == Role.ADMIN
    return user.id == conversation.medic_id


def may_be_notified(viewer: Viewer, conversation: ConversationRow, sender_id: str) -> bool:
    """Whether a message in `conversation` is pushed to `viewer`'s devices: everyone who may see
    it, except its sender."""
    return viewer.user_id != sender_id and can_see_conversation(viewer, conversation)


# --- users ---------------------------------------------------------------------------------


def can_see_user(viewer: Viewer, user: UserRow) -> bool:
    if user.org_id != viewer.org_id:
        return False
    return viewer.is_admin or user.id == viewer.user_id


def require_user_visible(viewer: Viewer, user: UserRow | None) -> UserRow:
    if user is None or not can_see_user(viewer, user):
        raise NotFound("user not found")
    return user


def may_manage_users(viewer: Viewer) -> bool:
    return viewer.is_admin


# --- fan-out: who could possibly see a change -------------------------------------------


EVERY_MEDIC = "*"


def medic_audience(conversation: ConversationRow | None, user: UserRow | None = None) -> str | None:
    """Which medics a change could be visible to: `EVERY_MEDIC`, one medic's id, or None (no medic).

    A change is about a user (`user`) or belongs to a conversation (the conversation itself, a
    message or a read status in it). Admins of the org may see any change of it. This is a
    superset used to skip recipients cheaply during fan-out; each remaining recipient is still
    checked with the predicates above.
    """
    if user is not None:
        return user.id
    if conversation is None:
        return None
    if conversation.type == ConversationType.BROADCAST:
        return EVERY_MEDIC
    return conversation.medic_id


# --- scopes: what a viewer's reads may return ----------------------------------------------


def viewer_scope(viewer: Viewer) -> Scope:
    """The rows of the stream this viewer may see (the SQL form of the rules above)."""
    return Scope(viewer.org_id) if viewer.is_admin else Scope(viewer.org_id, medic_id=viewer.user_id)


def org_scope(org_id: str) -> Scope:
    """Every row of an org: the server's own reads (the live feed) and the operator's (CLI)."""
    return Scope(org_id)


# --- names as the viewer sees them ---------------------------------------------------------


def conversation_name(viewer: Viewer, conversation: ConversationRow) -> str:
    if conversation.type == ConversationType.BROADCAST:
        return BROADCAST_NAME
    if viewer.is_admin:
        return conversation.medic_name or "Medic"
    return ADMIN_TEAM_NAME


def sender_name(viewer: Viewer, sender_role: str, sender_display_name: str) -> str:
    """Admins are one team to a medic: a medic sees every admin as "Admin"."""
    if not viewer.is_admin and sender_role == Role.ADMIN:
        return ADMIN_TEAM_NAME
    return sender_display_name
