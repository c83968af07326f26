"""Sessions for the OpenAPI fuzz run: a fresh sign-in for every case, and a keeper that undoes
what the fuzzer's lifecycle calls changed.

The fuzzer calls operations that end its own session (`POST /v1/auth/logout`, `DELETE
/v1/sessions`) or change the demo users it targets (deactivate, role, password reset, my
password), so one long-lived token would answer 401 for every later call. `FreshSessions`
signs the caller in over HTTP for every case, just before it is sent, so a logout or a
revocation only ends that case's throwaway session; it also fills in the "spare"
placeholders the dictionaries hold (`SPARE_*`): a live session of the caller, a live session
of a colleague in the same org, a refresh token never used. It signs out the sessions of
cases long done, so "my devices" stays short. `Keeper` is an admin of the demo org that is in
no dictionary (the fuzzer never targets it): after each successful lifecycle call, `restore`
reactivates the target, gives it back its role, or gives it back the demo password.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import schemathesis
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER, HookContext

from sitecomms.protocol.enums import Role

# Placeholders in the dictionaries, replaced per case by something live (valid UUIDs / tokens,
# so a case that carries one is still a positive case).
SPARE_OWN_SESSION = "5b0e5f6a-0000-4000-8000-000000000001"
SPARE_COLLEAGUE_SESSION = "5b0e5f6a-0000-4000-8000-000000000002"
SPARE_REFRESH_TOKEN = "spare-refresh-token"
KEEP_SESSIONS = 16  # the newest cases' sessions stay live; older ones are signed out


def sign_in(http: httpx.Client, email: str, password: str) -> dict[str, Any]:
    """A TokenView, from `POST /v1/auth/login`; fails loudly otherwise."""
    response = http.post("/v1/auth/login", json={"email": email, "password": password, "device": "fuzz"})
    assert response.status_code == 200, (email, response.status_code, response.text)
    token: dict[str, Any] = response.json()
    return token


class FreshSessions:
    """Signs `email` in for every case, as it is called (see the module doc).

    schemathesis applies auth when it builds a case, and builds some (the coverage phase's)
    long before it calls them, while earlier calls may end every session of the caller (my
    password, "sign out all my devices"). So the auth provider only marks a case with this
    instance's placeholder, and the `before_call` hook (global: schemathesis dispatches that
    one to no schema) signs in and fills the spares just before the request goes out. A
    session is signed out once KEEP_SESSIONS newer ones were used.
    """

    def __init__(self, http: httpx.Client, email: str, colleague: str, password: str) -> None:
        self._http = http
        self._email = email
        self._password = password
        self._placeholder = f"Bearer fresh-session-{uuid.uuid4().hex}"
        self._spares: dict[str, Callable[[], str]] = {
            SPARE_OWN_SESSION: lambda: str(sign_in(http, email, password)["session_id"]),
            SPARE_COLLEAGUE_SESSION: lambda: str(sign_in(http, colleague, password)["session_id"]),
        }
        self._used: deque[str] = deque()  # Authorization headers, oldest first
        self.signed_in = 0

    def provider(self) -> type[Any]:
        placeholder = self._placeholder

        class FreshSession:
            def get(self, case: schemathesis.Case[Any], context: schemathesis.AuthContext) -> str:
                return placeholder

            def set(self, case: schemathesis.Case[Any], data: str, context: schemathesis.AuthContext) -> None:
                case.headers["Authorization"] = data

        return FreshSession

    @contextmanager
    def installed(self) -> Iterator[None]:
        """The `before_call` hook, registered for the duration."""
        GLOBAL_HOOK_DISPATCHER.register_hook_with_name(self._before_call, "before_call")
        try:
            yield
        finally:
            GLOBAL_HOOK_DISPATCHER.unregister(self._before_call)

    def _before_call(self, context: HookContext, case: schemathesis.Case[Any], kwargs: dict[str, Any]) -> None:
        if case.headers.get("Authorization") != self._placeholder:
            return  # not one of ours, or a check's deliberately wrong or missing credentials
        signed_in = sign_in(self._http, self._email, self._password)
        self.signed_in += 1
        case.headers["Authorization"] = header = f"Bearer {signed_in['access_token']}"
        path = case.path_parameters
        if path is not None and path.get("session_id") in self._spares:
            path["session_id"] = self._spares[path["session_id"]]()
        body = case.body
        if isinstance(body, dict) and body.get("refresh_token") == SPARE_REFRESH_TOKEN:
            body["refresh_token"] = sign_in(self._http, self._email, self._password)["refresh_token"]
        self._used.append(header)
        while len(self._used) > KEEP_SESSIONS:
            old = self._used.popleft()
            self._http.post("/v1/auth/logout", headers={"Authorization": old})  # 204, or 401 if it already ended


class Keeper:
    """An admin outside every dictionary, restoring the demo users after the fuzzer's lifecycle calls."""

    def __init__(self, http: httpx.Client, email: str, password: str, roles: dict[str, Role], demo_password: str):
        self._http = http
        self._email = email
        self._password = password
        self._roles = roles  # the demo org's users, by id, and the role each started with
        self._demo_password = demo_password
        self._token = ""
        self.restored = 0

    def _call(self, method: str, path: str, body: dict[str, str] | None = None) -> None:
        for attempt in range(2):
            if not self._token:
                self._token = str(sign_in(self._http, self._email, self._password)["access_token"])
            response = self._http.request(method, path, json=body, headers={"Authorization": f"Bearer {self._token}"})
            if response.status_code == 401 and attempt == 0:  # expired: sign in again, once
                self._token = ""
                continue
            assert response.is_success, (method, path, response.status_code, response.text)
            return

    def restore(self, label: str, case: schemathesis.Case[Any], status: int, caller_id: str) -> None:
        """After `case` answered `status`: undo what it changed, if it changed anything."""
        if not 200 <= status < 300:
            return
        user_id = str((case.path_parameters or {}).get("user_id", ""))
        if label == "POST /v1/me/password":
            user_id = caller_id
        elif label not in {
            "POST /v1/users/{user_id}/deactivate",
            "PUT /v1/users/{user_id}/role",
            "POST /v1/users/{user_id}/password",
        }:
            return
        assert user_id in self._roles, f"{label} succeeded on a user the keeper does not know: {user_id}"
        if label.endswith("/deactivate"):
            self._call("POST", f"/v1/users/{user_id}/reactivate")
        elif label.endswith("/role"):
            self._call("PUT", f"/v1/users/{user_id}/role", {"role": self._roles[user_id].value})
        else:
            self._call("POST", f"/v1/users/{user_id}/password", {"password": self._demo_password})
        self.restored += 1
