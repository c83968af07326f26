"""The rules every piece of user input obeys, whichever way it comes in.

Each rule takes a raw value and returns it as it is stored (trimmed or lower-cased where the
rule says so), or raises `RuleViolation` with a message fit to show the person who typed it.
The services run these rules for every caller (HTTP, the CLI, the demo); the HTTP request
schemas run the same functions and mirror their bounds for OpenAPI; clients may run them
before queueing input, so nothing is accepted offline that the server would refuse later.
"""

from __future__ import annotations

import re

from sitecomms.protocol import limits


class RuleViolation(ValueError):
    """The value breaks a rule; the message says which, in words for the user."""


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def storable(value: str) -> str:
    """Text the database can hold: no NUL characters, no lone surrogates."""
    if "\x00" in value:
        raise RuleViolation("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RuleViolation("must be valid Unicode text (no lone surrogates)") from None
    return value


def _bounded(value: str, low: int, high: int) -> str:
    if len(value) < low:
        raise RuleViolation(f"must be at least {low} characters" if low > 1 else "must not be empty")
    if len(value) > high:
        raise RuleViolation(f"must be at most {high} characters")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise RuleViolation("must not be empty or only whitespace")
    return value


def message_content(value: str) -> str:
    """A message as typed (kept exactly, new lines and all)."""
    return _not_blank(_bounded(storable(value), 1, limits.MAX_CONTENT_CHARS))


def idempotency_key(value: str) -> str:
    return _not_blank(_bounded(storable(value), 1, limits.MAX_IDEMPOTENCY_KEY_CHARS))


def display_name(value: str) -> str:
    """A person's name as others see it, without surrounding white space."""
    return _bounded(_not_blank(storable(value)).strip(), 1, limits.MAX_DISPLAY_NAME_CHARS)


def org_name(value: str) -> str:
    return _bounded(_not_blank(storable(value)).strip(), 1, limits.MAX_ORG_NAME_CHARS)


def email(value: str) -> str:
    """An email address as stored and compared: trimmed, lower-case."""
    value = _bounded(storable(value).strip().lower(), 3, limits.MAX_EMAIL_CHARS)
    if not _EMAIL.match(value):
        raise RuleViolation("must look like name@example.org")
    return value


def login_email(value: str) -> str:
    """What sign-in accepts as an email: compared as stored, but never a hint that it is malformed."""
    return _bounded(_not_blank(storable(value)).strip().lower(), 1, limits.MAX_EMAIL_CHARS)


def new_password(value: str) -> str:
    return _bounded(storable(value), limits.MIN_PASSWORD_CHARS, limits.MAX_PASSWORD_CHARS)


def login_password(value: str) -> str:
    """What sign-in accepts: any password that could have been set, and no more."""
    return _bounded(storable(value), 1, limits.MAX_PASSWORD_CHARS)
