"""The SDK's public surface is exactly this: a change to it shows up here (as httpx pins its own)."""

from __future__ import annotations

import sitecomms.client as sdk


def test_all_is_the_sorted_set_of_public_names() -> None:
    assert sdk.__all__ == [
        "AuthenticationError",
        "Client",
        "ConnectionState",
        "Conversation",
        "LocalStoreError",
        "LocalStoreLocked",
        "Me",
        "Message",
        "NotFound",
        "RequestRejected",
        "ServerUnavailable",
        "SignedOut",
        "SiteCommsError",
    ]
    assert sdk.__all__ == sorted(sdk.__all__)
    public = {name for name in vars(sdk) if not name.startswith("_") and name != "annotations"}
    assert public == set(sdk.__all__)


def test_exports_report_the_public_module() -> None:
    for name in sdk.__all__:
        assert getattr(sdk, name).__module__ == "sitecomms.client", name


def test_one_exception_tree() -> None:
    errors = [getattr(sdk, n) for n in sdk.__all__ if isinstance(getattr(sdk, n), type)]
    for error in errors:
        if issubclass(error, Exception):
            assert issubclass(error, sdk.SiteCommsError), error.__name__
    assert issubclass(sdk.NotFound, sdk.RequestRejected)
    assert issubclass(sdk.SignedOut, sdk.AuthenticationError)
    assert issubclass(sdk.LocalStoreLocked, sdk.LocalStoreError)
