"""The server's HTTP API as the SDK uses it: protocol requests out, protocol dataclasses back.

Every answer is decoded at this boundary into the `sitecomms.protocol` dataclass the server
renders (`TokenView`, `MessageView`, `ReadStatusView`, `SyncPage`, `ReceiptsView`), strictly: an answer that is
not that shape raises `ServerUnavailable` naming the field (the same as an answer that is not
JSON: the server or something in front of it is not speaking the protocol; retrying may work).
Every failure is mapped into the SDK's errors. Each call names the access token it is made
with (`token=`): the caller (`_session.Session`) decides which, so a request started before a
refresh never picks up the next token half-way. A `Grant` is a sign-in's or a refresh's answer
with the token's lifetime as the server counts it (`expires_at` minus the answer's `Date`), so
a device whose clock is wrong still refreshes on time. The httpx transport is injectable
(`transport=`), so tests and embedders can drive a server in-process (`httpx.ASGITransport(app)`)
or through anything else httpx speaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx

from sitecomms.client._errors import AuthenticationError, NotFound, RequestRejected, ServerUnavailable
from sitecomms.protocol.decoding import WireError, decode
from sitecomms.protocol.limits import SYNC_PAGE_DEFAULT
from sitecomms.protocol.models import ErrorBody, MessageView, ReadStatusView, ReceiptsView, SyncPage, TokenView
from sitecomms.protocol.requests import LoginRequest, MarkReadRequest, RefreshRequest, SendMessageRequest, body

DEFAULT_TIMEOUT = 15.0
UNSPECIFIED = "error"  # the code of a 4xx whose body is not the protocol's error (a proxy's page)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Grant:
    """A sign-in's or a refresh's answer, and its access token's lifetime in seconds."""

    view: TokenView
    lifetime: float


class Api:
    def __init__(self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=DEFAULT_TIMEOUT)

    async def close(self) -> None:
        await self._http.aclose()

    async def exchange(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        """The server's answer if it is a success; else the SDK error the failure maps to."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = await self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:  # connection refused, reset, timeout, DNS...
            raise ServerUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise ServerUnavailable(f"{method} {path}: HTTP {response.status_code}")
        if response.status_code >= 400:
            try:
                answer = response.json()
            except ValueError:  # a proxy's page refusing the request: a refusal all the same
                answer = None
            _raise_refusal(response, answer)
        return response

    async def request(self, shape: type[T], method: str, path: str, *, token: str | None = None, **kwargs: Any) -> T:
        """The answer decoded as `shape`, or the SDK error the failure maps to."""
        response = await self.exchange(method, path, token=token, **kwargs)
        try:
            answer = response.json()
        except ValueError as exc:
            raise ServerUnavailable(f"{method} {path}: not JSON (HTTP {response.status_code})") from exc
        try:
            return decode(shape, answer)
        except WireError as exc:
            raise ServerUnavailable(f"{method} {path}: the answer is not a {shape.__name__}: {exc}") from exc

    async def login(self, email: str, password: str, device: str | None = None) -> Grant:
        """The server's answer; the caller decides whether to use its tokens."""
        return await self._grant("/v1/auth/login", body(LoginRequest(email, password, device)))

    async def refresh(self, refresh_token: str) -> Grant:
        """A new access token and the refresh token that replaces `refresh_token` (single use)."""
        return await self._grant("/v1/auth/refresh", body(RefreshRequest(refresh_token)))

    async def logout(self, token: str) -> None:
        await self.exchange("POST", "/v1/auth/logout", token=token)

    async def _grant(self, path: str, payload: dict[str, Any]) -> Grant:
        response = await self.exchange("POST", path, json=payload)
        try:
            view = decode(TokenView, response.json())
        except (ValueError, WireError) as exc:  # not JSON, or not a TokenView
            raise ServerUnavailable(f"POST {path}: the answer is not a TokenView: {exc}") from exc
        return Grant(view, (view.expires_at - _server_now(response)).total_seconds())

    async def send(self, conversation_id: str, content: str, idempotency_key: str, *, token: str) -> MessageView:
        payload = body(SendMessageRequest(conversation_id, content, idempotency_key))
        return await self.request(MessageView, "POST", "/v1/messages", token=token, json=payload)

    async def mark_read(self, conversation_id: str, position: int, *, token: str) -> ReadStatusView:
        path = f"/v1/conversations/{conversation_id}/read"
        return await self.request(ReadStatusView, "POST", path, token=token, json=body(MarkReadRequest(position)))

    async def sync(self, cursor: str | None, limit: int = SYNC_PAGE_DEFAULT, *, token: str) -> SyncPage:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        return await self.request(SyncPage, "GET", "/v1/sync", token=token, params=params)

    async def receipts(self, conversation_id: str, message_id: str, *, token: str) -> ReceiptsView:
        path = f"/v1/conversations/{conversation_id}/messages/{message_id}/receipts"
        return await self.request(ReceiptsView, "GET", path, token=token)

    def realtime_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/v1/realtime"


def _server_now(response: httpx.Response) -> datetime:
    """When the server answered, by its own clock (its `Date` header), else by ours."""
    try:
        return parsedate_to_datetime(response.headers["date"]).astimezone(UTC)
    except (KeyError, TypeError, ValueError):
        return datetime.now(UTC)


def _raise_refusal(response: httpx.Response, answer: object) -> None:
    """A 4xx as the SDK's error. A body that is not the protocol's error (a proxy's, say) still
    refuses the request: its status says how, with a generic code."""
    try:
        detail = decode(ErrorBody, answer).error
        code, message = detail.code, detail.message
    except WireError:
        code, message = UNSPECIFIED, response.reason_phrase
    if response.status_code == 401:
        raise AuthenticationError(message)
    if response.status_code == 404:
        raise NotFound(404, code, message)
    raise RequestRejected(response.status_code, code, message)
