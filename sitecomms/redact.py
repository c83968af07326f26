"""Credentials out of everything shown: the one helper for URLs that are logged, printed or repr'd.

Database and broker URLs carry passwords (`postgresql://app:s3cret@db/sitecomms`,
`redis://:s3cret@cache:6379/0`, `?password=...`). `redact_url` keeps what an operator needs to
recognise the target (scheme, user, host, port, path) and puts `***` in place of the password
and of any query parameter that looks like a secret. `scrub` removes the same secrets from any
other text, such as a driver's error message that quotes the URL it was given. `redact_target`
hides the whole query of a request target (`/v1/realtime?***`): any parameter a client sends
may carry a token. Nothing here is on a request's hot path: URLs are redacted once, when a
component is built, or when a failure or a request target is logged. Stdlib only, imported by
any layer.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
_SECRET_KEYS = ("pass", "pwd", "secret", "token", "key")  # query parameters whose names contain these


def _is_secret_key(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in _SECRET_KEYS)


def redact_url(url: str) -> str:
    """`url` with its password and secret-looking query parameters replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:  # unparsable (an unbalanced IPv6 bracket): show the scheme only
        scheme, sep, _rest = url.partition("://")
        return f"{scheme}://{MASK}" if sep else MASK
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at:
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_is_secret_key(name) for name, _ in pairs):
            query = urlencode([(name, MASK if _is_secret_key(name) else value) for name, value in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing secret: exactly as given
    if not url.startswith(f"{parts.scheme}://"):
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return (
        f"{parts.scheme}://{netloc}{parts.path}"
        + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


def secrets_of(url: str) -> list[str]:
    """The secrets `url` carries (its password, secret query values), as written and percent-decoded."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    userinfo, at, _host = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    for raw in parts.query.split("&"):
        name, eq, value = raw.partition("=")
        if eq and _is_secret_key(unquote(name)):
            found.append(value)
    expanded = {variant for secret in found for variant in (secret, unquote(secret)) if variant}
    return sorted(expanded, key=len, reverse=True)  # longest first: one secret may contain another


def scrub(text: str, url: str) -> str:
    """`text` with every secret of `url` (and `url` itself) replaced: for error messages that quote it."""
    text = text.replace(url, redact_url(url)) if url else text
    for secret in secrets_of(url):
        text = text.replace(secret, MASK)
    return text


def redact_target(target: str) -> str:
    """A request target (path and query) as logged: its query, whatever it holds, becomes `***`."""
    path, question, _query = target.partition("?")
    return f"{path}?{MASK}" if question else target
