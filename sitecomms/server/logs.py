"""What the server's log records say and how they are written: JSON lines, the request context, redaction.

`SITECOMMS_LOG_FORMAT=json` makes every record of a `sitecomms serve` process, its own loggers'
and uvicorn's ("uvicorn.error", "uvicorn.access"), one JSON object a line on stderr
(`json_config`, `JsonFormatter`): `time` (ISO 8601, UTC, milliseconds), `level` in lower case
("info", "warning", "error"), `logger`, `message`, then the request's `request_id`, `user_id`
and `org_id` when the record was made while serving one, the record's own fields (the access
line's, passed as `extra={FIELDS: {...}}`) and `exception` with the traceback; a string JSON
cannot hold (a lone surrogate, from a file name that is not UTF-8) is escaped, never a logging
error that loses the record. `text`, the default, leaves uvicorn's configuration as it always
was. The request context is one `ContextVar` holding a mutable `RequestContext`:
`api/request_id.py` sets it for each HTTP request and WebSocket, and `identify` completes it
once the caller is authenticated (the tasks a request starts share the object; long-lived
tasks are started with an empty context).
`UvicornRedaction`, on uvicorn's loggers in both formats, keeps credentials out of the lines
uvicorn and the websockets library write there: request targets lose their query
(`redact.redact_target`), secret-looking header values and WebSocket frames' contents (debug
level) are replaced by `***` and the frame's kind and size. Stdlib and orjson only.
"""

from __future__ import annotations

import logging
import logging.config
import os
import re
import time
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

import orjson

from sitecomms.redact import MASK, redact_target

REQUEST_ID_HEADER = b"x-request-id"
REQUEST_ID_MAX = 128
FIELDS = "sitecomms_fields"  # a record's structured fields: logger.info(..., extra={FIELDS: {...}})
UVICORN_LOGGERS = ("uvicorn.error", "uvicorn.access")
LOG_FORMATS = ("text", "json")

_SANE_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{REQUEST_ID_MAX}}}")
_SECRET_HEADER_PARTS = ("auth", "cookie", "token", "secret", "key", "pass", "pwd", "sec-websocket-protocol")


@dataclass(slots=True)
class RequestContext:
    """The request a record is made for: its id, and who is calling once that is known."""

    request_id: str
    user_id: str | None = None
    org_id: str | None = None


_current: ContextVar[RequestContext | None] = ContextVar("sitecomms_request", default=None)


def current() -> RequestContext | None:
    return _current.get()


def enter(context: RequestContext) -> Token[RequestContext | None]:
    return _current.set(context)


def leave(token: Token[RequestContext | None]) -> None:
    _current.reset(token)


def identify(user_id: str, org_id: str) -> None:
    """The caller of the request being served is this user of this org (no-op outside a request)."""
    context = _current.get()
    if context is not None:
        context.user_id, context.org_id = user_id, org_id


def fresh_id() -> str:
    """A random (version 4) UUID as 32 hex digits: `uuid.uuid4().hex` at a third of its cost."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    return raw.hex()


def request_id(offered: bytes | None) -> str:
    """The client's `X-Request-ID` when it is sane (1 to 128 of `[A-Za-z0-9._:-]`), else a fresh id."""
    if offered is not None and len(offered) <= REQUEST_ID_MAX:
        text = offered.decode("latin-1")
        if _SANE_ID.fullmatch(text):
            return text
    return fresh_id()


def _utc(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module doc for its fields)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _current.get()
        if context is not None:
            entry["request_id"] = context.request_id
            if context.user_id is not None:
                entry["user_id"] = context.user_id
                entry["org_id"] = context.org_id
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            for name, value in fields.items():
                entry.setdefault(name, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(entry, default=repr).decode()
        except orjson.JSONEncodeError:  # text JSON cannot hold (a lone surrogate: an undecodable file name)
            return orjson.dumps(_encodable(entry), default=repr).decode()


def _encodable(value: Any) -> Any:
    """`value` with every string JSON cannot hold made valid (lone surrogates as `\\udc80`)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_encodable(key): _encodable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable(item) for item in value]
    return _encodable(repr(value)) if not isinstance(value, int | float | bool | type(None)) else value


def json_config(level: str) -> dict[str, Any]:
    """The `logging.config.dictConfig` of JSON lines: the root logger and uvicorn's, one stderr handler."""
    shown = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["json"], "level": shown, "propagate": False},
            "uvicorn.error": {"level": shown},
            "uvicorn.access": {"handlers": ["json"], "level": shown, "propagate": False},
        },
        "root": {"handlers": ["json"], "level": shown},
    }


def configure(log_format: str, level: str) -> None:
    """Before the app is built: in JSON, its start-up records are JSON lines already (text: untouched)."""
    if log_format == "json":
        logging.config.dictConfig(json_config(level))
        logging.captureWarnings(True)  # Python's warnings too, as records of "py.warnings"


def _secret_header(name: object) -> bool:
    lowered = str(name).lower()
    return any(part in lowered for part in _SECRET_HEADER_PARTS)


def _frame_summary(frame: object) -> str:
    opcode = getattr(frame, "opcode", None)
    kind = getattr(opcode, "name", "frame")
    data = getattr(frame, "data", b"")
    return f"{kind} [{len(data)} bytes]"


def _target(arg: object) -> object:
    return redact_target(arg) if isinstance(arg, str) and arg.startswith("/") and "?" in arg else arg


class UvicornRedaction(logging.Filter):
    """On uvicorn's loggers: the request targets, header values and WebSocket frames they would show."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or not args:
            return True
        if record.msg in ("< %s", "> %s") and len(args) == 1 and hasattr(args[0], "opcode"):
            record.args = (_frame_summary(args[0]),)  # the websockets library's frames (debug): never their data
        elif record.msg in ("< %s: %s", "> %s: %s") and len(args) == 2 and _secret_header(args[0]):
            record.args = (args[0], MASK)  # its handshake headers (debug)
        else:
            record.args = tuple(_target(arg) for arg in args)
        return True


def guard_uvicorn() -> None:
    """Put `UvicornRedaction` on uvicorn's loggers (once; after uvicorn configured them)."""
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, UvicornRedaction)]:
            logger.removeFilter(old)
        logger.addFilter(UvicornRedaction())
