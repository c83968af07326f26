"""Organisations, users, sign-in and the directory."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sitecomms.protocol import rules
from sitecomms.protocol.enums import ConversationType, Role
from sitecomms.protocol.models import MeView, TokenView, UserList, UserView
from sitecomms.server.services import views, visibility
from sitecomms.server.services.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated, obey
from sitecomms.server.services.passwords import Passwords
from sitecomms.server.services.publisher import Publisher
from sitecomms.server.services.tokens import Tokens
from sitecomms.server.services.visibility import Viewer
from sitecomms.store import conversations, orgs, schema, users
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
    def __init__(self, db: Database, passwords: Passwords, tokens: Tokens, publisher: Publisher) -> None:
        self._db = db
        self._passwords = passwords
        self._tokens = tokens
        self._publisher = publisher

    @property
    def tokens(self) -> Tokens:
        return self._tokens

    # --- sign-in -------------------------------------------------------------------------

    async def login(self, email: str, password: str) -> TokenView:
        try:
            email = obey(rules.login_email, "email", email)
            password = obey(rules.login_password, "password", password)
        except InvalidInput:
            email = ""
        user = await self._db.read("login_lookup", users.get_user_by_email, email) if email else None
        if not await self._passwords.verify(user.password_hash if user else None, password) or user is None:
            raise Unauthenticated("wrong email or password")
        token, expires_at = self._tokens.issue(user_id=user.id, org_id=user.org_id, role=Role(user.role))
        return TokenView(access_token=token, token_type="bearer", expires_at=expires_at, user=views.user_view(user))

    async def mint_token(self, email: str, ttl_seconds: int | None = None) -> TokenView:
        """A token for a user without their password (operator CLI only)."""
        user = await self._db.read("mint_token_lookup", users.get_user_by_email, normalise_email(email))
        if user is None:
            raise NotFound(f"no user with email {email}")
        ttl = timedelta(seconds=ttl_seconds) if ttl_seconds else None
        token, expires_at = self._tokens.issue(user_id=user.id, org_id=user.org_id, role=Role(user.role), ttl=ttl)
        return TokenView(access_token=token, token_type="bearer", expires_at=expires_at, user=views.user_view(user))

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
    conn: Connection, *, org_id: str, email: str, display_name: str, role: Role, password_hash: str
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
