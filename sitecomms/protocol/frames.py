"""The realtime channel's vocabulary: frame types and close codes (see docs/realtime.md).

One WebSocket per signed-in client carries every conversation the user may see. Frames are
JSON objects with a `type`. Change frames use the change's own type (`message.created`, ...)
and carry `position`, `cursor` and `data`, exactly like an entry of `GET /v1/sync`, so a client
applies both through one code path and stores `cursor` as it goes.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ClientFrame(StrEnum):
    HELLO = "hello"  # first frame: {"type": "hello", "token": "...", "cursor": "v1..." | null}
    AUTH = "auth"  # a fresh token before the current one expires: {"type": "auth", "token": "..."}
    PING = "ping"
    PONG = "pong"


class ServerFrame(StrEnum):
    WELCOME = "welcome"  # {"user_id", "org_id", "cursor", "heartbeat_seconds", "expires_at"}
    LIVE = "live"  # replay done; {"cursor"}: everything up to it has been sent
    PING = "ping"
    PONG = "pong"
    AUTHENTICATED = "authenticated"  # a refreshed token was accepted: {"expires_at"}
    ERROR = "error"  # {"code", "message"}: the frame was refused, the connection goes on
    RESYNC = "resync"  # {"reason"}: sent just before closing with RESYNC_REQUIRED


class ResyncReason(StrEnum):
    TOO_FAR_BEHIND = "too_far_behind"
    SLOW_CONSUMER = "slow_consumer"
    CURSOR_AHEAD = "cursor_ahead"
    INVALID_CURSOR = "invalid_cursor"


class CloseCode(IntEnum):
    """WebSocket close codes. 4000-4999 are ours; the others are RFC 6455's."""

    GOING_AWAY = 1001  # the server is shutting down: reconnect (to another server) and resume
    SERVICE_RESTART = 1012  # the same, from uvicorn: it closes every socket this way when the process stops
    MESSAGE_TOO_BIG = 1009  # a frame over 64 KiB
    TRY_AGAIN_LATER = 1013  # the server could not serve the socket now (e.g. database unreachable)
    UNAUTHENTICATED = 4401  # no valid token in time, the token expired without a refresh, or access was lost
    TOO_MANY_SOCKETS = 4429  # the user opened more sockets than allowed: this, the oldest, was closed
    HEARTBEAT_TIMEOUT = 4408  # nothing heard from the client for too long
    RESYNC_REQUIRED = 4409  # catch up with GET /v1/sync from your cursor (or none), then reconnect
    PROTOCOL_ERROR = 4400  # the first frame was not a hello


MAX_FRAME_BYTES = 64 * 1024
