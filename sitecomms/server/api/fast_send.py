"""The direct path for `POST /v1/messages`, the one hot HTTP route.

FastAPI's per-request machinery (dependency solving, a thread hop for the bearer dependency,
routing through every router, response validation) cost more CPU than the whole send itself
(profiles in docs/performance.md). This pure ASGI middleware serves the *well-formed* send
directly: a JSON body within the limit, a valid bearer token, a body that `SendMessageRequest`
accepts. It calls the same `Messaging.send` and answers with the same body, status and error
shape as the route in `messages.py`.

Anything else (no or a bad token, another content type, a body too large, malformed JSON, a
failed validation) is handed, untouched, to the FastAPI app behind it, with the body it has
already read replayed, so every error answer stays exactly the documented one. The route in
`messages.py` stays the documented definition (OpenAPI) and the fallback.
"""

from __future__ import annotations

import orjson
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sitecomms.protocol.limits import MAX_BODY_BYTES
from sitecomms.server.api import errors
from sitecomms.server.api.schemas import SendMessageRequest
from sitecomms.server.services.errors import Unauthenticated
from sitecomms.server.services.messaging import Messaging
from sitecomms.server.services.tokens import Tokens
from sitecomms.server.services.visibility import Viewer

PATH = "/v1/messages"


class FastSend:
    def __init__(self, app: ASGIApp, *, messaging: Messaging, tokens: Tokens) -> None:
        self.app = app
        self._messaging = messaging
        self._tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        viewer = self._viewer(scope)
        if viewer is None:
            await self.app(scope, receive, send)
            return
        read: list[Message] = []
        body = await _read_body(receive, read)
        request = None if body is None else _parse(body)
        if request is None:
            await self.app(scope, _replay(read, receive), send)
            return
        try:
            result = await self._messaging.send(
                viewer, str(request.conversation_id), request.content, request.idempotency_key
            )
        except Exception as exc:
            answer = errors.answer_for(exc)
            if answer is None:
                raise  # the server error middleware answers 500 and logs it
            await answer(scope, receive, send)
            return
        body = orjson.dumps(result.message, option=orjson.OPT_UTC_Z)
        headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 201 if result.created else 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _viewer(self, scope: Scope) -> Viewer | None:
        """The caller, if the request carries a valid token and a JSON content type; else None."""
        token = None
        json_body = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and credentials:
                    token = credentials.strip()
            elif name == b"content-type":
                json_body = value.split(b";", 1)[0].strip().lower() == b"application/json"
            elif name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY_BYTES):
                return None
        if token is None or not json_body:
            return None
        try:
            return self._tokens.verify(token)
        except Unauthenticated:
            return None


async def _read_body(receive: Receive, read: list[Message]) -> bytes | None:
    """The whole body, or None when it is over the limit or the client went away."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _parse(body: bytes) -> SendMessageRequest | None:
    try:
        return SendMessageRequest.model_validate(orjson.loads(body))
    except (orjson.JSONDecodeError, ValidationError):
        return None


def _replay(read: list[Message], receive: Receive) -> Receive:
    pending = list(read)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
