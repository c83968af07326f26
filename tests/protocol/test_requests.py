"""The protocol's request dataclasses and the server's request schemas name the same fields."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import BaseModel

from sitecomms.protocol import requests
from sitecomms.protocol.enums import Role
from sitecomms.server.api import schemas

PAIRS = [
    (requests.LoginRequest, schemas.LoginRequest),
    (requests.RefreshRequest, schemas.RefreshRequest),
    (requests.ChangePasswordRequest, schemas.ChangePasswordRequest),
    (requests.ResetPasswordRequest, schemas.ResetPasswordRequest),
    (requests.SetRoleRequest, schemas.SetRoleRequest),
    (requests.SendMessageRequest, schemas.SendMessageRequest),
    (requests.MarkReadRequest, schemas.MarkReadRequest),
    (requests.CreateUserRequest, schemas.CreateUserRequest),
    (requests.UpdateUserRequest, schemas.UpdateUserRequest),
    (requests.PushSubscriptionRequest, schemas.PushSubscriptionRequest),
]


@pytest.mark.parametrize(("request_class", "schema"), PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_a_request_and_its_schema_have_the_same_fields(request_class: type, schema: type[BaseModel]) -> None:
    assert [f.name for f in dataclasses.fields(request_class)] == list(schema.model_fields)


def test_every_schema_has_its_request() -> None:
    names = {name for name, value in vars(schemas).items() if isinstance(value, type) and name.endswith("Request")}
    assert names == {schema.__name__ for _, schema in PAIRS}


def test_a_body_is_what_the_server_accepts() -> None:
    sent = requests.SendMessageRequest("6f1c2b7e-0000-4000-8000-000000000001", "On my way", "k-1")
    expected = {"conversation_id": sent.conversation_id, "content": "On my way", "idempotency_key": "k-1"}
    assert requests.body(sent) == expected
    assert schemas.SendMessageRequest.model_validate(requests.body(sent)).content == "On my way"
    user = requests.CreateUserRequest("maya@example.org", "Maya", Role.MEDIC, "correct horse battery")
    assert schemas.CreateUserRequest.model_validate(requests.body(user)).role is Role.MEDIC
