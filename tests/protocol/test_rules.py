"""The input rules: what each keeps, what each refuses, and that refusals say why."""

from __future__ import annotations

import pytest

from sitecomms.protocol import limits, rules
from sitecomms.protocol.rules import RuleViolation


def test_content_is_kept_exactly_as_typed() -> None:
    assert rules.message_content("  two\nlines  ") == "  two\nlines  "
    assert rules.message_content("x" * limits.MAX_CONTENT_CHARS) == "x" * limits.MAX_CONTENT_CHARS


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "must not be empty"),
        ("   \n\t", "only whitespace"),
        ("x" * (limits.MAX_CONTENT_CHARS + 1), f"at most {limits.MAX_CONTENT_CHARS}"),
        ("a\x00b", "NUL"),
        ("a\ud800b", "lone surrogates"),
    ],
)
def test_content_refused_with_a_reason(value: str, says: str) -> None:
    with pytest.raises(RuleViolation, match=says):
        rules.message_content(value)


def test_names_are_trimmed_and_bounded() -> None:
    assert rules.display_name("  Rosa Field ") == "Rosa Field"
    assert rules.org_name(" Team ") == "Team"
    with pytest.raises(RuleViolation, match="whitespace"):
        rules.display_name("    ")
    with pytest.raises(RuleViolation, match=f"at most {limits.MAX_DISPLAY_NAME_CHARS}"):
        rules.display_name("n" * (limits.MAX_DISPLAY_NAME_CHARS + 1))
    with pytest.raises(RuleViolation, match=f"at most {limits.MAX_ORG_NAME_CHARS}"):
        rules.org_name("o" * (limits.MAX_ORG_NAME_CHARS + 1))


def test_email_is_normalised_and_must_look_like_one() -> None:
    assert rules.email("  Rosa@Field.Example ") == "rosa@field.example"
    for bad in ("no-at-sign", "two@@x", "sp ace@x.y", "@xy.z"):
        with pytest.raises(RuleViolation, match=r"name@example\.org"):
            rules.email(bad)
    assert rules.login_email(" Not-An-Email ") == "not-an-email"  # sign-in gives no hint; it simply fails


def test_passwords_bounded_but_kept_verbatim() -> None:
    assert rules.new_password(" spaced password ") == " spaced password "
    with pytest.raises(RuleViolation, match=f"at least {limits.MIN_PASSWORD_CHARS}"):
        rules.new_password("short")
    with pytest.raises(RuleViolation, match=f"at most {limits.MAX_PASSWORD_CHARS}"):
        rules.login_password("p" * (limits.MAX_PASSWORD_CHARS + 1))
    assert rules.login_password("x") == "x"
