"""`sitecomms.redact`: URLs shown without their secrets, and secrets scrubbed from other text."""

from __future__ import annotations

import pytest

from sitecomms.config import Settings
from sitecomms.redact import redact_target, redact_url, scrub

SECRET = "s3cret"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@cache:6379/0", "redis://user:***@cache:6379/0"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://default:s3cret@cache/0?client_name=web", "rediss://default:***@cache/0?client_name=web"),
        ("postgresql://app:s3cret@db:5432/sitecomms", "postgresql://app:***@db:5432/sitecomms"),
        ("postgresql+asyncpg://app:s3%40cret@db/x", "postgresql+asyncpg://app:***@db/x"),  # percent-encoded
        ("postgres://app:s3@cret@db/x", "postgres://app:***@db/x"),  # an unescaped @ in the password
        ("redis://cache/0?password=s3cret&db=1", "redis://cache/0?password=***&db=1"),
        ("postgresql://db/x?user=app&sslpassword=s3cret", "postgresql://db/x?user=app&sslpassword=***"),
        ("postgresql://app@db/x", "postgresql://app@db/x"),  # nothing secret: unchanged
        ("sqlite:///./sitecomms.db", "sqlite:///./sitecomms.db"),
        ("memory://", "memory://"),
        ("redis://user:s3cret@[::1/0", "redis://***"),  # unparsable: the scheme only
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_removes_the_url_and_its_secrets_from_any_text() -> None:
    url = "postgresql://app:s3%40cret@db/x?sslpassword=t0ken"
    text = f"cannot connect to {url}: password 's3@cret' refused, also s3%40cret and t0ken"
    scrubbed = scrub(text, url)
    assert "s3@cret" not in scrubbed and "s3%40cret" not in scrubbed and "t0ken" not in scrubbed
    assert "postgresql://app:***@db/x?sslpassword=***" in scrubbed
    assert scrub("nothing to hide", "memory://") == "nothing to hide"


def test_settings_repr_and_str_show_urls_without_passwords() -> None:
    settings = Settings(
        database_url=f"postgresql://app:{SECRET}@db/sitecomms", bus_url=f"redis://:{SECRET}@cache:6379/0"
    )
    for shown in (repr(settings), str(settings)):
        assert SECRET not in shown
        assert "postgresql://app:***@db/sitecomms" in shown and "redis://:***@cache:6379/0" in shown
    assert settings.database_url == f"postgresql://app:{SECRET}@db/sitecomms"  # the value itself is intact


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("/v1/realtime?token=s3cret", "/v1/realtime?***"),
        ("/v1/sync?cursor=v1.5.abc&limit=10", "/v1/sync?***"),  # every query: any parameter may carry a token
        ("/v1/x?s3cret", "/v1/x?***"),  # a bare value too
        ("/v1/x?", "/v1/x?***"),
        ("/v1/conversations/abc/messages", "/v1/conversations/abc/messages"),  # no query: unchanged
        ("/", "/"),
    ],
)
def test_redact_target_hides_the_whole_query(target: str, shown: str) -> None:
    assert redact_target(target) == shown
