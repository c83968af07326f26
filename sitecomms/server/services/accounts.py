"""Organisations, users and the directory, and each account's lifecycle.

Admins (or the operator, `actor` None) add users, deactivate and reactivate them, change their
role and reset their password; everyone renames themself and changes their own password. The
last active admin of an org can be neither deactivated nor demoted. Whatever changes someone's
access revokes the sessions it must (services/sessions.py) and logs the access change, so every
server process drops it within a second (services/access.py); each change is audited.
Users are never deleted: a deactivated user's messages stay in every thread under their name.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sitecomms.protocol import rules
from sitecomms.protocol.enums import AuditKind, ConversationType, Role
from sitecomms.protocol.models import MeView, UserList, UserView
from sitecomms.server.services import views, visibility
from sitecomms.server.services.errors import Conflict, Forbidden, NotFound, Unauthenticated, obey
from sitecomms.server.services.passwords import Passwords
from sitecomms.server.services.publisher import Publisher
from sitecomms.server.services.sessions import RevokeReason, revoke_user_sessions
from sitecomms.server.services.signin import detail
from sitecomms.server.services.visibility import Viewer
from sitecomms.store import access_changes, audit, conversations, orgs, schema, users
from sitecomms.store.database import Connection, Database
from sitecomms.store.errors import Duplicate
from sitecomms.store.rows import OrgRow, UserRow
from sitecomms.store.stream import next_position
from sitecomms.store.types import utcnow


def normalise_email(email: str) -> str:
    return obey(rules.email, "email", email)


@dataclass(frozen=True, slots=True)
class NewUser:
    email: str
    display_name: str
    role: Role
    password: str


class Accounts:
    def __init__(self, db: Database, passwords: Passwords, publisher: Publisher) -> None:
        self._db = db
        self._passwords = passwords
        self._publisher = publisher

    # --- organisations -------------------------------------------------------------------

    async def create_org(self, name: str) -> OrgRow:
        name = obey(rules.org_name, "organisation name", name)
        return await self._db.write("create_org", _create_org_txn, str(uuid.uuid4()), name)

    async def find_org(self, name_or_id: str) -> OrgRow:
        org = await self._db.read("find_org", orgs.get_org, name_or_id)
        org = org or await self._db.read("find_org_by_name", orgs.find_org_by_name, name_or_id)
        if org is None:
            raise NotFound(f"no organisation {name_or_id!r}")
        return org

    # --- users ---------------------------------------------------------------------------

    async def create_user(self, actor: Viewer | None, org_id: str, new: NewUser) -> UserView:
        """Create a user; `actor` None means the operator (CLI), otherwise an admin of `org_id`."""
        if actor is not None and (not visibility.may_manage_users(actor) or actor.org_id != org_id):
            raise Forbidden("only admins add users")
        email = normalise_email(new.email)
        display_name = obey(rules.display_name, "display_name", new.display_name)
        password_hash = await self._passwords.hash(obey(rules.new_password, "password", new.password))
        try:
            row = await self._db.write(
                "create_user",
                _create_user_txn,
                actor_id=actor.user_id if actor else None,
                org_id=org_id,
                email=email,
                display_name=display_name,
                role=new.role,
                password_hash=password_hash,
            )
        except Duplicate as exc:
            if exc.constraint != schema.UNIQUE_EMAIL:
                raise
            raise Conflict(f"a user with email {email} already exists") from exc
        await self._publisher.publish(org_id, _last_position(row))
        return views.user_view(row)

    async def rename_user(self, actor: Viewer, user_id: str, display_name: str) -> UserView:
        display_name = obey(rules.display_name, "display_name", display_name)
        row, renamed = await self._db.write("rename_user", _rename_txn, actor, user_id, display_name)
        if renamed:
            await self._publisher.publish(row.org_id, _last_position(row))
        return views.user_view(row)

    async def me(self, viewer: Viewer) -> MeView:
        user, org = await self._db.read("me", _me_txn, viewer)
        return MeView(user=views.user_view(user), org=views.org_view(org))

    async def directory(self, viewer: Viewer) -> UserList:
        rows = await self._db.read("directory", users.list_users, visibility.viewer_scope(viewer))
        return UserList(users=[views.user_view(r) for r in rows])

    # --- lifecycle -----------------------------------------------------------------------

    async def set_active(self, actor: Viewer | None, user_id: str, active: bool) -> UserView:
        """Deactivate (every session revoked) or reactivate a user; admins of the org or the operator."""
        row, position = await self._db.write("set_active", _set_active_txn, actor, user_id, active)
        await self._changed(row.org_id, position)
        return views.user_view(row)

    async def set_role(self, actor: Viewer | None, user_id: str, role: Role) -> UserView:
        """Promote a medic to admin or demote an admin to medic."""
        row, position = await self._db.write("set_role", _set_role_txn, actor, user_id, role)
        await self._changed(row.org_id, position)
        return views.user_view(row)

    async def reset_password(self, actor: Viewer | None, user_id: str, password: str) -> None:
        """An admin (or the operator) sets a user's password: every session of theirs is revoked."""
        password_hash = await self._passwords.hash(obey(rules.new_password, "password", password))
        await self._db.write("reset_password", _reset_password_txn, actor, user_id, password_hash)
        await self._publisher.access_changed()

    async def change_password(self, viewer: Viewer, current: str, new: str) -> None:
        """The caller's own password; the current one is required, and their other sessions end."""
        new = obey(rules.new_password, "new_password", new)
        user = await self._db.read("change_password_lookup", users.get_user, viewer.user_id)
        if user is None or not await self._passwords.verify(user.password_hash, current):
            raise Forbidden("current_password: wrong password")
        if current == new:
            raise Conflict("new_password: must differ from the current password")
        password_hash = await self._passwords.hash(new)
        await self._db.write("change_password", _change_password_txn, viewer, password_hash)
        await self._publisher.access_changed()

    async def find_user(self, email: str) -> UserView:
        """A user by email, for the operator (CLI)."""
        row = await self._db.read("find_user", users.get_user_by_email, normalise_email(email))
        if row is None:
            raise NotFound(f"no user with email {email}")
        return views.user_view(row)

    async def _changed(self, org_id: str, position: int | None) -> None:
        if position is not None:
            await self._publisher.publish(org_id, position)
        await self._publisher.access_changed()

    async def members(self, org_id: str) -> list[UserView]:
        """Every user of an org, for the operator (CLI); not reachable over HTTP."""
        rows = await self._db.read("org_members", users.list_users, visibility.org_scope(org_id))
        return [views.user_view(r) for r in rows]


def _create_org_txn(conn: Connection, org_id: str, name: str) -> OrgRow:
    now = utcnow()
    org = orgs.insert_org(conn, org_id=org_id, name=name, now=now)
    conversations.insert_conversation(
        conn,
        conversation_id=str(uuid.uuid4()),
        org_id=org_id,
        type=ConversationType.BROADCAST,
        medic_id=None,
        now=now,
        position=next_position(conn, org_id),
    )
    return org


def _create_user_txn(
    conn: Connection,
    *,
    actor_id: str | None,
    org_id: str,
    email: str,
    display_name: str,
    role: Role,
    password_hash: str,
) -> UserRow:
    if orgs.get_org(conn, org_id) is None:
        raise NotFound(f"no organisation {org_id!r}")
    is_medic = role is Role.MEDIC
    position = next_position(conn, org_id, 2 if is_medic else 1)
    now = utcnow()
    user = users.insert_user(
        conn,
        user_id=str(uuid.uuid4()),
        org_id=org_id,
        email=email,
        display_name=display_name,
        role=role.value,
        password_hash=password_hash,
        now=now,
        position=position,
    )
    if is_medic:
        conversations.insert_conversation(
            conn,
            conversation_id=str(uuid.uuid4()),
            org_id=org_id,
            type=ConversationType.DIRECT,
            medic_id=user.id,
            now=now,
            position=position + 1,
        )
    audit.record(
        conn,
        at=now,
        org_id=org_id,
        kind=AuditKind.USER_CREATED,
        actor_id=actor_id,
        subject_id=user.id,
        detail=detail(email=email, display_name=display_name, role=role.value),
    )
    return user


def _last_position(user: UserRow) -> int:
    """A medic's change also moves their direct conversation, one position later."""
    return user.position + (1 if user.role == Role.MEDIC else 0)


def _rename_txn(conn: Connection, actor: Viewer, user_id: str, display_name: str) -> tuple[UserRow, bool]:
    target = visibility.require_user_visible(actor, users.get_user(conn, user_id))
    if target.display_name == display_name:
        return target, False
    is_medic = target.role == Role.MEDIC
    position = next_position(conn, target.org_id, 2 if is_medic else 1)
    users.rename_user(conn, target.id, display_name=display_name, position=position)
    audit.record(
        conn,
        at=utcnow(),
        org_id=target.org_id,
        kind=AuditKind.USER_RENAMED,
        actor_id=actor.user_id,
        subject_id=target.id,
        detail=detail(old=target.display_name, new=display_name),
    )
    if is_medic:  # admins see the direct conversation under the medic's name
        direct = conversations.get_direct_conversation_of(conn, target.id)
        if direct is not None:
            conversations.touch(conn, direct.id, position=position + 1)
    found = users.get_user(conn, target.id)
    assert found is not None
    return found, True


def _me_txn(conn: Connection, viewer: Viewer) -> tuple[UserRow, OrgRow]:
    user = users.get_user(conn, viewer.user_id)
    org = orgs.get_org(conn, viewer.org_id)
    if user is None or org is None or user.org_id != viewer.org_id:
        raise Unauthenticated("the account behind this token no longer exists")
    return user, org


def _managed(conn: Connection, actor: Viewer | None, user_id: str) -> UserRow:
    """The user an admin (or the operator) manages: NotFound outside the admin's org."""
    target = users.get_user(conn, user_id)
    if actor is None:
        if target is None:
            raise NotFound("no such user")
        return target
    target = visibility.require_user_visible(actor, target)  # a medic sees only themself
    if not visibility.may_manage_users(actor):
        raise Forbidden("only admins manage users")
    return target


def _keep_an_admin(conn: Connection, target: UserRow, what: str) -> None:
    if target.role == Role.ADMIN and target.active and users.count_active_admins(conn, target.org_id) <= 1:
        raise Conflict(f"the last active admin of an organisation cannot be {what}; make another admin first")


def _locked(conn: Connection, actor: Viewer | None, user_id: str) -> UserRow:
    """The managed user, read again after taking the org's stream lock (held to COMMIT; taking
    no position). On PostgreSQL two admins deactivating or demoting each other at once would
    otherwise both count two active admins and both go ahead, leaving the org none."""
    target = _managed(conn, actor, user_id)
    next_position(conn, target.org_id, 0)
    return _managed(conn, actor, user_id)


def _bump(conn: Connection, target: UserRow) -> int:
    """A new stream position for the user's row (and a medic's direct conversation, one later)."""
    is_medic = target.role == Role.MEDIC
    position = next_position(conn, target.org_id, 2 if is_medic else 1)
    if is_medic:
        direct = conversations.get_direct_conversation_of(conn, target.id)
        if direct is not None:
            conversations.touch(conn, direct.id, position=position + 1)
    return position


def _set_active_txn(conn: Connection, actor: Viewer | None, user_id: str, active: bool) -> tuple[UserRow, int | None]:
    target = _locked(conn, actor, user_id)
    if target.active == active:
        return target, None
    if not active:
        _keep_an_admin(conn, target, "deactivated")
    now = utcnow()
    position = _bump(conn, target)
    users.set_active(conn, target.id, active=active, now=now, position=position)
    if active:
        access_changes.record(conn, at=now, user_id=target.id)
    else:
        revoke_user_sessions(conn, target.id, reason=RevokeReason.DEACTIVATED, now=now)
    audit.record(
        conn,
        at=now,
        org_id=target.org_id,
        kind=AuditKind.USER_REACTIVATED if active else AuditKind.USER_DEACTIVATED,
        actor_id=actor.user_id if actor else None,
        subject_id=target.id,
        session_id=actor.session_id or None if actor else None,
    )
    found = users.get_user(conn, target.id)
    assert found is not None
    return found, position + (1 if target.role == Role.MEDIC else 0)


def _set_role_txn(conn: Connection, actor: Viewer | None, user_id: str, role: Role) -> tuple[UserRow, int | None]:
    target = _locked(conn, actor, user_id)
    if target.role == role.value:
        return target, None
    if role is Role.MEDIC:
        _keep_an_admin(conn, target, "demoted")
    now = utcnow()
    becomes_medic = role is Role.MEDIC
    position = next_position(conn, target.org_id, 2)
    users.set_role(conn, target.id, role=role.value, position=position)
    direct = conversations.get_direct_conversation_of(conn, target.id)
    if direct is not None:
        conversations.touch(conn, direct.id, position=position + 1)
    elif becomes_medic:  # an admin made medic gets the direct conversation every medic has
        conversations.insert_conversation(
            conn,
            conversation_id=str(uuid.uuid4()),
            org_id=target.org_id,
            type=ConversationType.DIRECT,
            medic_id=target.id,
            now=now,
            position=position + 1,
        )
    access_changes.record(conn, at=now, user_id=target.id)
    audit.record(
        conn,
        at=now,
        org_id=target.org_id,
        kind=AuditKind.ROLE_CHANGED,
        actor_id=actor.user_id if actor else None,
        subject_id=target.id,
        detail=detail(old=target.role, new=role.value),
    )
    found = users.get_user(conn, target.id)
    assert found is not None
    return found, position + 1


def _reset_password_txn(conn: Connection, actor: Viewer | None, user_id: str, password_hash: str) -> None:
    target = _managed(conn, actor, user_id)
    if actor is not None and actor.user_id == target.id:  # else a stolen access token sets a new password
        raise Forbidden("change your own password with POST /v1/me/password (the current one is required)")
    now = utcnow()
    users.set_password_hash(conn, target.id, password_hash)
    revoked = revoke_user_sessions(conn, target.id, reason=RevokeReason.PASSWORD_RESET, now=now)
    audit.record(
        conn,
        at=now,
        org_id=target.org_id,
        kind=AuditKind.PASSWORD_RESET,
        actor_id=actor.user_id if actor else None,
        subject_id=target.id,
        detail=detail(sessions_revoked=revoked),
    )


def _change_password_txn(conn: Connection, viewer: Viewer, password_hash: str) -> None:
    now = utcnow()
    users.set_password_hash(conn, viewer.user_id, password_hash)
    revoked = revoke_user_sessions(
        conn, viewer.user_id, reason=RevokeReason.PASSWORD_CHANGED, now=now, keep=viewer.session_id
    )
    audit.record(
        conn,
        at=now,
        org_id=viewer.org_id,
        kind=AuditKind.PASSWORD_CHANGED,
        actor_id=viewer.user_id,
        subject_id=viewer.user_id,
        session_id=viewer.session_id or None,
        detail=detail(other_sessions_revoked=revoked),
    )
