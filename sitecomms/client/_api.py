"""The server's HTTP API as the SDK uses it, with every failure mapped into the SDK's errors.

The httpx transport is injectable (`transport=`), so tests and embedders can drive a server
in-process (`httpx.ASGITransport(app)`) or through anything else httpx speaks.
"""

from __future__ import annotations

from typing import Any

import httpx

from sitecomms.client._errors import AuthenticationError, NotFound, RequestRejected, ServerUnavailable

DEFAULT_TIMEOUT = 15.0


class Api:
    def __init__(self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token: str | None = None
        self._http = httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=DEFAULT_TIMEOUT)

    async def close(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = await self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:  # connection refused, reset, timeout, DNS...
            raise ServerUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise ServerUnavailable(f"{method} {path}: HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError as exc:
            raise ServerUnavailable(f"{method} {path}: not JSON (HTTP {response.status_code})") from exc
        if response.status_code >= 400:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            code, message = str(error.get("code", "error")), str(error.get("message", response.reason_phrase))
            if response.status_code == 401:
                raise AuthenticationError(message)
            if response.status_code == 404:
                raise NotFound(404, code, message)
            raise RequestRejected(response.status_code, code, message)
        return body

    async def login(self, email: str, password: str) -> dict[str, Any]:
        """The server's answer; the caller decides whether to use its token (`self.token`)."""
        body: dict[str, Any] = await self.request("POST", "/v1/auth/login", json={"email": email, "password": password})
        return body

    async def send(self, conversation_id: str, content: str, idempotency_key: str) -> dict[str, Any]:
        payload = {"conversation_id": conversation_id, "content": content, "idempotency_key": idempotency_key}
        result: dict[str, Any] = await self.request("POST", "/v1/messages", json=payload)
        return result

    async def mark_read(self, conversation_id: str, position: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", f"/v1/conversations/{conversation_id}/read", json={"position": position}
        )
        return result

    async def sync(self, cursor: str | None, limit: int = 500) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        result: dict[str, Any] = await self.request("GET", "/v1/sync", params=params)
        return result

    def realtime_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/v1/realtime"
