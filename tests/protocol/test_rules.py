"""The input rules: what each keeps, what each refuses, and that refusals say why."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sitecomms.protocol import limits, rules
from sitecomms.protocol.lookalikes import skeleton
from sitecomms.protocol.rules import RuleViolation

BIDI_CONTROLS = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


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
        ("\x1b[31mred", r"control characters \(found U\+001B\)"),
        ("ring\x07", r"found U\+0007"),
        ("del\x7f", r"found U\+007F"),
        ("c1\x9b31m", r"found U\+009B"),
        ("nel\x85", r"found U\+0085"),
        ("vt\x0b", r"found U\+000B"),
    ],
)
def test_content_refused_with_a_reason(value: str, says: str) -> None:
    with pytest.raises(RuleViolation, match=says):
        rules.message_content(value)


def test_content_line_ends_become_lf_and_tabs_stay() -> None:
    assert rules.message_content("one\r\ntwo\rthree\nfour") == "one\ntwo\nthree\nfour"
    assert rules.message_content("a\tb\u202ec") == "a\tb\u202ec", "bidi in content is the chat's to show safely"
    assert rules.message_content("x\r\n" * 2) == "x\nx\n"


@given(st.text(max_size=50))
def test_accepted_content_has_no_control_but_newline_and_tab_and_is_stable(value: str) -> None:
    try:
        kept = rules.message_content(value)
    except RuleViolation:
        return
    assert all(unicodedata.category(c) != "Cc" or c in "\n\t" for c in kept)
    assert rules.message_content(kept) == kept


def test_names_are_trimmed_and_bounded() -> None:
    assert rules.display_name("  Rosa Field ") == "Rosa Field"
    assert rules.org_name(" Team ") == "Team"
    with pytest.raises(RuleViolation, match="whitespace"):
        rules.display_name("    ")
    with pytest.raises(RuleViolation, match=f"at most {limits.MAX_DISPLAY_NAME_CHARS}"):
        rules.display_name("n" * (limits.MAX_DISPLAY_NAME_CHARS + 1))
    with pytest.raises(RuleViolation, match=f"at most {limits.MAX_ORG_NAME_CHARS}"):
        rules.org_name("o" * (limits.MAX_ORG_NAME_CHARS + 1))


def test_names_are_stored_nfkc_normalised() -> None:
    assert rules.display_name("\uff32\uff4f\uff53\uff41") == "Rosa"  # fullwidth
    assert rules.display_name("Toma\u0301s") == "Tomás"  # combining accent composed
    assert rules.display_name("\u00a0Rosa\u2003Field\u3000") == "Rosa Field"  # odd spaces become spaces
    assert rules.org_name("\ufb01eld team") == "field team"  # the fi ligature
    assert rules.display_name("Aiko 🚑") == "Aiko 🚑"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("Rosa\nField", r"control characters \(found U\+000A\)"),
        ("Rosa\tField", r"found U\+0009"),
        ("Rosa\x1b[31m", r"found U\+001B"),
        ("Rosa\x7f", r"found U\+007F"),
        ("Rosa\x85", r"found U\+0085"),
        ("Rosa\u202eleiF", r"bidirectional control characters \(found U\+202E\)"),
        ("Rosa\u2066x\u2069", r"bidirectional .*U\+2066"),
        ("Rosa\u200f", r"bidirectional .*U\+200F"),
        ("Rosa\u061c", r"bidirectional .*U\+061C"),
        ("Ro\u200bsa", r"invisible characters \(found U\+200B\)"),
        ("Ro\u200dsa", r"invisible .*U\+200D"),
        ("Ro\u2060sa", r"invisible .*U\+2060"),
        ("Ro\u2064sa", r"invisible .*U\+2064"),
        ("\ufeffRosa", r"invisible .*U\+FEFF"),
        ("Ro\u00adsa", r"invisible .*U\+00AD"),
        ("Rosa\U000e0041", r"invisible .*U\+E0041"),  # a tag character
        ("\u3164", r"invisible .*U\+1160"),  # the Hangul filler, after NFKC
        ("Rosa\u115f", r"invisible .*U\+115F"),
        ("\uffa0", r"invisible"),
        ("\u2800", r"invisible .*U\+2800"),
        ("Rosa\u2028Field", r"single line \(found U\+2028\)"),
        ("\u0301\u0301", "visible letter, digit or symbol"),
        ("...", "visible letter, digit or symbol"),
        ("\u00a0\u2003", "whitespace"),
    ],
)
def test_names_refused_with_a_reason(value: str, says: str) -> None:
    with pytest.raises(RuleViolation, match=says):
        rules.display_name(value)
    with pytest.raises(RuleViolation, match=says):
        rules.org_name(value)


@pytest.mark.parametrize(
    "value",
    [
        "Admin",
        "ADMIN",
        "admin",
        "\u0410dmin",  # Cyrillic A
        "\u0430dm\u0456n",  # Cyrillic a and i
        "adm1n",
        "ADMlN",
        "Adm!n",
        "A d m i n",
        "admin.",
        "Admin!",
        "-admin-",
        "\uff21\uff24\uff2d\uff29\uff2e",  # fullwidth
        "\U0001d400\U0001d41d\U0001d426\U0001d422\U0001d427",  # mathematical bold
        "\u1d00\u1d05\u1d0d\u026a\u0274",  # small capitals
        "Ádmin",
        "adrnin",
        "\u0391dmin",  # Greek Alpha
        "Admins",
        "Administrator",
        "SiteComms",
        "Site Comms",
        "System",
        "\u0455\u0443\u0455tem",  # Cyrillic s, y, s
        "Support",
        "supp0rt",
    ],
)
def test_reserved_names_and_their_look_alikes_are_refused(value: str) -> None:
    with pytest.raises(RuleViolation, match="is reserved"):
        rules.display_name(value)


@pytest.mark.parametrize("value", ["Admin 2", "Alex Admin", "Badminton coach", "Sam Okafor", "Systems Team"])
def test_names_that_merely_contain_a_reserved_word_are_kept(value: str) -> None:
    assert rules.display_name(value) == value


def test_organisations_may_use_reserved_words() -> None:
    assert rules.org_name("Support") == "Support"


def test_skeletons_fold_case_marks_lookalikes_and_punctuation() -> None:
    assert skeleton("Ádm1n.") == skeleton("admin") == skeleton("ADMIN") == skeleton("adm ln")
    assert skeleton("adm!n", strokes=True) == skeleton("admin") != skeleton("adm!n")
    assert skeleton("Maya") != skeleton("Priya")


NAME_CHARACTERS = st.characters(codec="utf-8") | st.sampled_from([*sorted(BIDI_CONTROLS), "\u200b", "\u3164", " "])


@given(st.text(NAME_CHARACTERS, max_size=20))
def test_accepted_names_have_no_control_or_bidi_characters_and_are_stable(value: str) -> None:
    try:
        name = rules.display_name(value)
    except RuleViolation:
        return
    assert not any(unicodedata.category(c) in ("Cc", "Cf") or c in BIDI_CONTROLS for c in name)
    assert name == name.strip() == unicodedata.normalize("NFKC", name)
    assert any(unicodedata.category(c)[0] in "LNS" for c in name)
    assert rules.display_name(name) == name


def test_email_is_normalised_and_must_look_like_one() -> None:
    assert rules.email("  Rosa@Field.Example ") == "rosa@field.example"
    assert rules.email("admin@demo.example") == "admin@demo.example"
    assert rules.email("x@example.org") == "x@example.org"
    assert rules.email("x@B\u00dcCHER.example") == "x@b\u00fccher.example", "IDNA: Unicode domain, lower-case"
    assert rules.email("x@xn--bcher-kva.example") == "x@b\u00fccher.example", "Punycode and Unicode are one address"
    for bad in ("no-at-sign", "two@@x.y", "sp ace@x.y", "@xy.z", "a@b", "x@localhost", "Rosa <r@x.org>", "x@-x.org"):
        with pytest.raises(RuleViolation, match=r"name@example\.org"):
            rules.email(bad)
    with pytest.raises(RuleViolation, match="It should have a period"):
        rules.email("a@b")


def test_sign_in_email_normalises_like_the_stored_one_but_never_refuses_the_shape() -> None:
    for valid in ("  Rosa@Field.Example ", "x@xn--bcher-kva.example", "admin@demo.example"):
        assert rules.login_email(valid) == rules.email(valid)
    assert rules.login_email(" Not-An-Email ") == "not-an-email"  # sign-in gives no hint; it simply fails
    assert rules.login_email("A@B") == "a@b"


def test_passwords_bounded_but_kept_verbatim() -> None:
    assert limits.MIN_PASSWORD_CHARS == 10
    assert rules.new_password(" spaced password ") == " spaced password "
    assert rules.new_password("x" * 10) == "x" * 10
    with pytest.raises(RuleViolation, match=f"at least {limits.MIN_PASSWORD_CHARS}"):
        rules.new_password("short")
    with pytest.raises(RuleViolation, match=f"at least {limits.MIN_PASSWORD_CHARS}"):
        rules.new_password("x" * 9)
    with pytest.raises(RuleViolation, match="only whitespace"):
        rules.new_password(" " * 12)
    with pytest.raises(RuleViolation, match=f"at most {limits.MAX_PASSWORD_CHARS}"):
        rules.login_password("p" * (limits.MAX_PASSWORD_CHARS + 1))
    assert rules.login_password("x") == "x"


@pytest.mark.parametrize(
    "common", ["password123", "PASSWORD123", "Password123", "qwertyuiop", "1234567890", "iloveyou12"]
)
def test_the_most_common_passwords_are_refused_in_any_case(common: str) -> None:
    with pytest.raises(RuleViolation, match="most common passwords"):
        rules.new_password(common)
    assert rules.login_password(common) == common, "sign-in still accepts whatever was set before"


def test_the_common_password_list_is_read_once_and_fits_the_length_rule() -> None:
    listed = rules.common_passwords()
    assert rules.common_passwords() is listed
    assert len(listed) > 1000
    assert all(len(p) >= limits.MIN_PASSWORD_CHARS and p == p.lower() for p in listed)
