"""The server's HTTP API as the SDK uses it: protocol requests out, protocol dataclasses back.

Every answer is decoded at this boundary into the `sitecomms.protocol` dataclass the server
renders (`TokenView`, `MessageView`, `ReadStatusView`, `SyncPage`), strictly: an answer that is
not that shape raises `ServerUnavailable` naming the field (the same as an answer that is not
JSON: the server or something in front of it is not speaking the protocol; retrying may work).
Every failure is mapped into the SDK's errors. The httpx transport is injectable
(`transport=`), so tests and embedders can drive a server in-process (`httpx.ASGITransport(app)`)
or through anything else httpx speaks.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx

from sitecomms.client._errors import AuthenticationError, NotFound, RequestRejected, ServerUnavailable
from sitecomms.protocol.decoding import WireError, decode
from sitecomms.protocol.limits import SYNC_PAGE_DEFAULT
from sitecomms.protocol.models import ErrorBody, MessageView, ReadStatusView, SyncPage, TokenView
from sitecomms.protocol.requests import LoginRequest, MarkReadRequest, SendMessageRequest, body

DEFAULT_TIMEOUT = 15.0
UNSPECIFIED = "error"  # the code of a 4xx whose body is not the protocol's error (a proxy's page)

T = TypeVar("T")


class Api:
    def __init__(self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token: str | None = None
        self._http = httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=DEFAULT_TIMEOUT)

    async def close(self) -> None:
        await self._http.aclose()

    async def request(self, shape: type[T], method: str, path: str, **kwargs: Any) -> T:
        """The answer decoded as `shape`, or the SDK error the failure maps to."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = await self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:  # connection refused, reset, timeout, DNS...
            raise ServerUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise ServerUnavailable(f"{method} {path}: HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError as exc:
            if response.status_code >= 400:  # a proxy's page refusing the request: a refusal all the same
                _raise_refusal(response, None)
            raise ServerUnavailable(f"{method} {path}: not JSON (HTTP {response.status_code})") from exc
        if response.status_code >= 400:
            _raise_refusal(response, answer)
        try:
            return decode(shape, answer)
        except WireError as exc:
            raise ServerUnavailable(f"{method} {path}: the answer is not a {shape.__name__}: {exc}") from exc

    async def login(self, email: str, password: str) -> TokenView:
        """The server's answer; the caller decides whether to use its token (`self.token`)."""
        return await self.request(TokenView, "POST", "/v1/auth/login", json=body(LoginRequest(email, password)))

    async def send(self, conversation_id: str, content: str, idempotency_key: str) -> MessageView:
        payload = body(SendMessageRequest(conversation_id, content, idempotency_key))
        return await self.request(MessageView, "POST", "/v1/messages", json=payload)

    async def mark_read(self, conversation_id: str, position: int) -> ReadStatusView:
        path = f"/v1/conversations/{conversation_id}/read"
        return await self.request(ReadStatusView, "POST", path, json=body(MarkReadRequest(position)))

    async def sync(self, cursor: str | None, limit: int = SYNC_PAGE_DEFAULT) -> SyncPage:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        return await self.request(SyncPage, "GET", "/v1/sync", params=params)

    def realtime_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/v1/realtime"


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
