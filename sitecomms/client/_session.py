"""The signed-in session: its tokens, kept in the local store, renewed silently before they expire.

A sign-in gives a short access token and a single-use refresh token (a new one with every
refresh; using a rotated one again revokes the whole session). `Session` holds them, saved in
the store's `meta` so a restarted app is still signed in, and hands every request a token that
is fresh: from 80 % of the access token's life (or when the server answers 401) it calls
`POST /v1/auth/refresh` first. Refreshes are single-flight: one lock, and a caller whose token
was already replaced gets the replacement instead of refreshing again, so one refresh token is
never sent twice on purpose. The new tokens are saved durably *before* the access token is
used, so a crash cannot leave the store holding only a rotated refresh token.

A refresh that gets no answer (offline) keeps the refresh token to try again with the next
request (the server answers a retry with the same token again for a minute); until the access
token expires, requests go on with it. There is no timer here: refreshes happen only when a
request needs a token, so the callers' backoff paces them and an offline device does not
retry in a loop. A refresh the server refuses (401) ends the session: the tokens are cleared,
the user and the outbox stay, and `SignedOut` says to sign in again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from sitecomms.client._api import Api, Grant
from sitecomms.client._errors import AuthenticationError, RequestRejected, ServerUnavailable, SignedOut, SiteCommsError
from sitecomms.client._store import LocalStore

log = logging.getLogger("sitecomms.client")

T = TypeVar("T")

REFRESH_AT = 0.8  # of the access token's life
LOGOUT_TIMEOUT = 5.0  # seconds: signing out locally never waits long for the server
_KEYS = ("token", "token_refresh_at", "token_expires_at", "refresh_token", "session_id")


@dataclass(frozen=True, slots=True)
class Credentials:
    """The session's tokens. Times are by the local clock (`Session`'s), in epoch seconds."""

    access_token: str
    refresh_at: float  # renew from here on
    expires_at: float  # the server refuses the access token from here on
    refresh_token: str | None  # None: a session saved by an SDK without refresh (renewal impossible)
    session_id: str | None

    @classmethod
    def granted(cls, grant: Grant, now: float) -> Credentials:
        life = max(0.0, grant.lifetime)
        view = grant.view
        return cls(view.access_token, now + REFRESH_AT * life, now + life, view.refresh_token, view.session_id)

    @classmethod
    def stored(cls, meta: dict[str, str | None]) -> Credentials | None:
        token = meta.get("token")
        if token is None:
            return None
        return cls(
            token,
            _seconds(meta.get("token_refresh_at")),
            _seconds(meta.get("token_expires_at")),
            meta.get("refresh_token"),
            meta.get("session_id"),
        )

    def meta(self) -> dict[str, str | None]:
        return {
            "token": self.access_token,
            "token_refresh_at": repr(self.refresh_at),
            "token_expires_at": repr(self.expires_at),
            "refresh_token": self.refresh_token,
            "session_id": self.session_id,
        }


def _seconds(stored: str | None) -> float:
    """A stored time; unknown (a store older than refresh) counts as never."""
    try:
        return math.inf if stored is None else float(stored)
    except ValueError:
        return 0.0  # unreadable: due now


class Session:
    def __init__(self, api: Api, store: LocalStore, credentials: Credentials | None, clock: Callable[[], float]):
        self._api = api
        self._store = store
        self._credentials = credentials
        self._clock = clock
        self._lock = asyncio.Lock()
        self._watchers: set[asyncio.Event] = set()
        self.refreshes = 0  # refreshes this process made (answered or not)

    @classmethod
    async def load(cls, api: Api, store: LocalStore, clock: Callable[[], float]) -> Session:
        meta = {key: await store.run(store.core.get_meta, key) for key in _KEYS}
        return cls(api, store, Credentials.stored(meta), clock)

    @property
    def credentials(self) -> Credentials | None:
        return self._credentials

    def now(self) -> float:
        return self._clock()

    def watch(self) -> asyncio.Event:
        """An event set whenever the tokens change (`unwatch` it when done)."""
        changed = asyncio.Event()
        self._watchers.add(changed)
        return changed

    def unwatch(self, changed: asyncio.Event) -> None:
        self._watchers.discard(changed)

    # --- changing the tokens ---------------------------------------------------------------

    async def signed_in(self, grant: Grant, user_meta: dict[str, str | None]) -> None:
        """A sign-in's tokens, saved with the user's details in one transaction, then used."""
        credentials = Credentials.granted(grant, self._clock())
        async with self._lock:
            await self._store.run(self._store.core.set_meta, {**user_meta, **credentials.meta()})
            self._use(credentials)

    async def clear(self) -> None:
        """Forget the tokens (the user, the cursor and the outbox stay)."""
        await self._store.run(self._store.core.set_meta, dict.fromkeys(_KEYS))
        self._use(None)

    async def sign_out(self) -> None:
        """End the session on the server (best effort: offline, it simply expires) and here."""
        async with self._lock:
            credentials = self._credentials
            if credentials is not None:
                with contextlib.suppress(SiteCommsError, TimeoutError):
                    async with asyncio.timeout(LOGOUT_TIMEOUT):
                        await self._api.logout(credentials.access_token)
            await self.clear()

    def _use(self, credentials: Credentials | None) -> None:
        self._credentials = credentials
        for changed in self._watchers:
            changed.set()

    # --- tokens for requests ---------------------------------------------------------------

    async def call(self, request: Callable[..., Awaitable[T]]) -> T:
        """`request(token=...)` with a fresh token; on 401, once more after a refresh."""
        token = await self.fresh()
        try:
            return await request(token=token)
        except SignedOut:
            raise
        except AuthenticationError as exc:
            log.info("the server refused the access token (%s): refreshing", exc)
            return await request(token=await self.renew(token))

    async def fresh(self) -> str:
        """An access token to use now: renewed first when due (and the server can be reached)."""
        credentials = self._credentials
        if credentials is None:
            raise SignedOut("not signed in: sign in again")
        if self._clock() < credentials.refresh_at or credentials.refresh_token is None:
            return credentials.access_token
        try:
            return await self.renew(credentials.access_token)
        except ServerUnavailable:
            if self._clock() < credentials.expires_at:
                return credentials.access_token  # still good: the next request tries again
            raise

    async def renew(self, stale: str) -> str:
        """A token to replace `stale`: the one another caller's refresh already gave, or a new one.

        Raises `ServerUnavailable` (tokens kept: try again later with the same refresh token)
        or `SignedOut` (the server refused the refresh: tokens cleared). Callers that waited
        for a refresh that got no answer do not try again at once: they get its error too."""
        attempts = self.refreshes
        async with self._lock:
            credentials = self._credentials
            if credentials is None:
                raise SignedOut("not signed in: sign in again")
            if credentials.access_token != stale:
                return credentials.access_token
            if self.refreshes != attempts:
                raise ServerUnavailable("the refresh just tried got no answer: later")
            if credentials.refresh_token is None:
                await self.clear()
                raise SignedOut("the saved session cannot be renewed: sign in again")
            self.refreshes += 1
            try:
                grant = await self._api.refresh(credentials.refresh_token)
            except AuthenticationError as exc:
                log.warning("the server ended the session (%s)", exc)
                await self.clear()
                raise SignedOut(f"the session has ended ({exc}): sign in again") from exc
            except RequestRejected as exc:  # not a verdict on the session: never mark a message failed for it
                raise ServerUnavailable(f"refresh refused for now: {exc}") from exc
            renewed = Credentials.granted(grant, self._clock())
            await self._store.run(self._store.core.set_meta, renewed.meta())  # durable before it is used
            self._use(renewed)
            return renewed.access_token
