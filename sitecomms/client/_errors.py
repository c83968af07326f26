"""The SDK's one exception tree.

SiteCommsError
├── AuthenticationError     sign in again (wrong password, expired or revoked token)
│   └── SignedOut           the session is over (revoked, expired, signed out): sign in again
├── ServerUnavailable       unreachable, timed out or 5xx: the request may be retried
├── RequestRejected         the server refused the request (4xx), with its error code
│   └── NotFound
└── LocalStoreError         the local database cannot be used
    └── LocalStoreLocked    another process holds it
"""

from __future__ import annotations


class SiteCommsError(Exception):
    """Base of every error the SDK raises."""


class AuthenticationError(SiteCommsError):
    """Sign in again: the credentials or the token were refused. Queued messages are kept."""


class SignedOut(AuthenticationError):
    """The session is over: the server refused to renew it (revoked, idle for 30 days, the
    password changed, signed out) or there is none. Sign in again as the same user; the queued
    messages are kept and go out then."""


class ServerUnavailable(SiteCommsError):
    """The server could not be reached, timed out or failed (5xx). Retrying may work."""


class RequestRejected(SiteCommsError):
    """The server refused the request (4xx) with `code` and `message`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class NotFound(RequestRejected):
    """The thing does not exist or is not visible to this user."""


class LocalStoreError(SiteCommsError):
    """The local database cannot be opened or used."""


class LocalStoreLocked(LocalStoreError):
    """Another process is using this local database (one client per store file)."""
