"""Phoenix channel frames, as supabase-js speaks them: both serializers, text frames only.

`vsn=1.0.0` frames are JSON objects `{"join_ref", "ref", "topic", "event", "payload"}`;
`vsn=2.0.0` frames are JSON arrays `[join_ref, ref, topic, event, payload]`
(docs/migrating-from-supabase.md; the protocol as verified against the clients:
../shared/reference/supabase-realtime.md). `decode` turns a client frame into a `Message` or
raises `BadFrame` saying what is wrong; `encode` writes a server frame, the payload given as
JSON bytes so that a change rendered once is spliced into every channel's frame unchanged.
The server never sends binary frames: the v2 client decodes only its broadcast kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

V1 = "1.0.0"
V2 = "2.0.0"
VERSIONS = (V1, V2)

PHOENIX = "phoenix"  # the socket's own topic (heartbeats)
HEARTBEAT = "heartbeat"
JOIN = "phx_join"
LEAVE = "phx_leave"
REPLY = "phx_reply"
CLOSE = "phx_close"
ERROR = "phx_error"
ACCESS_TOKEN = "access_token"
SYSTEM = "system"
POSTGRES_CHANGES = "postgres_changes"

MAX_TOPIC_CHARS = 200
_MAX_REF_CHARS = 32


class BadFrame(ValueError):
    """A frame that is not a Phoenix message; `ref` is its ref when one could be read."""

    def __init__(self, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.ref = ref


@dataclass(frozen=True, slots=True)
class Message:
    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: dict[str, Any]


def _ref(value: object, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or len(value) > _MAX_REF_CHARS:
        raise BadFrame(f"{name} must be a string of at most {_MAX_REF_CHARS} characters or null")
    return value


def decode(text: str | bytes, vsn: str) -> Message:
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadFrame("frames are JSON text") from None
    if vsn == V2:
        if not isinstance(frame, list) or len(frame) != 5:
            raise BadFrame("vsn 2.0.0 frames are arrays [join_ref, ref, topic, event, payload]")
        join_ref, ref, topic, event, payload = frame
    else:
        if not isinstance(frame, dict):
            raise BadFrame('vsn 1.0.0 frames are objects {"topic", "event", "payload", "ref", "join_ref"}')
        join_ref, ref, topic, event, payload = (frame.get(k) for k in ("join_ref", "ref", "topic", "event", "payload"))
    ref_text = _ref(ref, "ref")
    join_ref_text = _ref(join_ref, "join_ref")
    if not isinstance(topic, str) or not topic or len(topic) > MAX_TOPIC_CHARS:
        raise BadFrame(f"topic must be a string of 1 to {MAX_TOPIC_CHARS} characters", ref_text)
    if not isinstance(event, str) or not event or len(event) > 100:
        raise BadFrame("event must be a non-empty string", ref_text)
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise BadFrame("payload must be an object", ref_text)
    return Message(join_ref_text, ref_text, topic, event, payload)


def encode(vsn: str, join_ref: str | None, ref: str | None, topic: str, event: str, payload: bytes) -> str:
    """A server frame; `payload` is the payload's JSON."""
    head = orjson.dumps([join_ref, ref, topic, event])
    if vsn == V2:
        return (head[:-1] + b"," + payload + b"]").decode()
    fields = orjson.dumps({"join_ref": join_ref, "ref": ref, "topic": topic, "event": event})
    return (fields[:-1] + b',"payload":' + payload + b"}").decode()


def encode_obj(vsn: str, join_ref: str | None, ref: str | None, topic: str, event: str, payload: object) -> str:
    return encode(vsn, join_ref, ref, topic, event, orjson.dumps(payload))


def reply(vsn: str, message: Message, status: str, response: object) -> str:
    """The `phx_reply` to a client message (ref and join_ref echoed)."""
    payload = {"status": status, "response": response}
    return encode_obj(vsn, message.join_ref, message.ref, message.topic, REPLY, payload)


def system(vsn: str, topic: str, extension: str, status: str, message: str, **extra: object) -> str:
    """A `system` message (Supabase's: the subscription is live, or what went wrong)."""
    channel = topic.removeprefix("realtime:")
    payload = {"extension": extension, "status": status, "message": message, "channel": channel, **extra}
    return encode_obj(vsn, None, None, topic, SYSTEM, payload)


def changes(vsn: str, topic: str, ids: list[int], data: bytes) -> str:
    """A `postgres_changes` push: the ids of the bindings it fires, and the change's data."""
    return encode(vsn, None, None, topic, POSTGRES_CHANGES, b'{"ids":' + orjson.dumps(ids) + b',"data":' + data + b"}")
