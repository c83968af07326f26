"""The rules every piece of user input obeys, whichever way it comes in.

Each rule takes a raw value and returns it as it is stored (trimmed, normalised or lower-cased
where the rule says so), or raises `RuleViolation` with a message fit to show the person who
typed it. The services run these rules for every caller (HTTP, the CLI, the demo); the HTTP
request schemas run the same functions and mirror their bounds for OpenAPI; clients may run
them before queueing input, so nothing is accepted offline that the server would refuse later.

Names (people's and organisations') are stored NFKC-normalised and must be one visible line:
no control characters, no bidirectional or other invisible formatting characters, and at least
one letter, digit or symbol; a person's name must not read as a reserved word (`lookalikes`).
Messages are kept as typed, line ends made LF, without control characters but new line and
tab. Emails are checked and normalised by the `email-validator` library where it is installed
(the server's extra; imported lazily through `extras.require`, as clients need not check
emails, and without it only their shape is checked). Passwords must be long enough
and not one of the most common (`common_passwords.txt`). All of it is stdlib only otherwise.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from importlib import resources

from sitecomms.extras import MissingExtra, require
from sitecomms.protocol import limits
from sitecomms.protocol.lookalikes import skeleton


class RuleViolation(ValueError):
    """The value breaks a rule; the message says which, in words for the user."""


# Without email-validator (a client-only install): the shape alone, a dot in the domain.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")

_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Letters and symbols by category that show nothing: Hangul fillers, the blank braille pattern.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_LINE_BREAKS = frozenset("\u2028\u2029")  # categories Zl and Zp; CR, LF and NEL are controls
_MESSAGE_WHITESPACE_CONTROLS = frozenset("\n\t")

RESERVED_NAMES = ("admin", "admins", "administrator", "sitecomms", "system", "support")
_RESERVED_SKELETONS = {skeleton(word): word for word in RESERVED_NAMES}


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


def _code_point(char: str) -> str:
    return f"U+{ord(char):04X}"


def _no_controls(value: str, allowed: frozenset[str] = frozenset()) -> str:
    """Refuse control characters (category Cc: C0, DEL, C1), but those in `allowed`."""
    for char in value:
        if unicodedata.category(char) == "Cc" and char not in allowed:
            raise RuleViolation(f"must not contain control characters (found {_code_point(char)})")
    return value


def _one_visible_line(value: str) -> str:
    """Refuse what can hide or reorder text in a name, and names that show nothing."""
    visible = False
    for char in value:
        category = unicodedata.category(char)
        if char in _BIDI_CONTROLS:
            raise RuleViolation(f"must not contain bidirectional control characters (found {_code_point(char)})")
        if category == "Cf" or char in _BLANK_LETTERS:
            raise RuleViolation(f"must not contain invisible characters (found {_code_point(char)})")
        if char in _LINE_BREAKS:
            raise RuleViolation(f"must be a single line (found {_code_point(char)})")
        visible = visible or category[0] in "LNS"
    if not visible:
        raise RuleViolation("must contain a visible letter, digit or symbol")
    return value


def _clean_name(value: str, high: int) -> str:
    """A name as stored: NFKC-normalised, trimmed, one visible line of at most `high` characters."""
    name = _no_controls(unicodedata.normalize("NFKC", _not_blank(storable(value))))  # even at the ends
    return _bounded(_one_visible_line(_not_blank(name.strip())), 1, high)


def message_content(value: str) -> str:
    """A message as typed, but line ends made LF (CRLF and lone CR); no other control characters but tab."""
    text = _not_blank(storable(value)).replace("\r\n", "\n").replace("\r", "\n")
    return _bounded(_no_controls(text, _MESSAGE_WHITESPACE_CONTROLS), 1, limits.MAX_CONTENT_CHARS)


def idempotency_key(value: str) -> str:
    return _not_blank(_bounded(storable(value), 1, limits.MAX_IDEMPOTENCY_KEY_CHARS))


def display_name(value: str) -> str:
    """A person's name as others see it: a clean name (see the module) that reads as no reserved word."""
    name = _clean_name(value, limits.MAX_DISPLAY_NAME_CHARS)
    for reading in (skeleton(name), skeleton(name, strokes=True)):
        if reading in _RESERVED_SKELETONS:
            raise RuleViolation(f"{name!r} is reserved (it reads as {_RESERVED_SKELETONS[reading]!r})")
    return name


def org_name(value: str) -> str:
    return _clean_name(value, limits.MAX_ORG_NAME_CHARS)


def email(value: str) -> str:
    """An email address as stored and compared: valid, domain IDNA-normalised, lower-case."""
    value = _bounded(storable(value).strip(), 3, limits.MAX_EMAIL_CHARS)
    try:
        validator = require("email_validator", "checking an email address")
    except MissingExtra:  # a client without the server's extra: the shape only
        if not _EMAIL.match(value):
            raise RuleViolation("must look like name@example.org") from None
        return value.lower()
    try:
        checked = validator.validate_email(value, check_deliverability=False)
    except validator.EmailNotValidError as exc:
        raise RuleViolation(f"must look like name@example.org ({exc})") from None
    normalized: str = checked.normalized  # the domain in its Unicode spelling, whichever was typed
    return _bounded(normalized.lower(), 3, limits.MAX_EMAIL_CHARS)


def login_email(value: str) -> str:
    """What sign-in accepts as an email: normalised as stored, but never a hint that it is malformed."""
    value = _bounded(_not_blank(storable(value)).strip(), 1, limits.MAX_EMAIL_CHARS)
    try:
        return email(value)
    except RuleViolation:
        return value.lower()  # matches no stored address: sign-in fails like any wrong password


@functools.cache
def common_passwords() -> frozenset[str]:
    """The most common passwords long enough to be allowed otherwise, lower-case (read once)."""
    listing = resources.files("sitecomms.protocol").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(line for line in listing.splitlines() if line and not line.startswith("#"))


def new_password(value: str) -> str:
    """A password as set: kept verbatim, long enough, not blank, and not one of the most common."""
    value = _bounded(storable(value), limits.MIN_PASSWORD_CHARS, limits.MAX_PASSWORD_CHARS)
    if not value.strip():
        raise RuleViolation("must not be only whitespace")
    if value.strip().lower() in common_passwords():
        raise RuleViolation("is one of the most common passwords; choose another")
    return value


def login_password(value: str) -> str:
    """What sign-in accepts: any password that could have been set, and no more."""
    return _bounded(storable(value), 1, limits.MAX_PASSWORD_CHARS)
