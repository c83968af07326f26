"""`GET` and `POST /v1/watermelon/sync`: WatermelonDB `synchronize()`'s pull and push (services/watermelon.py)."""

from __future__ import annotations

from enum import Enum

from fastapi import APIRouter, Depends, Query

from sitecomms.server.api.auth import Authenticator
from sitecomms.server.api.responses import JSON, responses
from sitecomms.server.api.schemas import WatermelonPushBody
from sitecomms.server.services import watermelon
from sitecomms.server.services.visibility import Viewer
from sitecomms.server.services.watermelon import TableChanges, Watermelon

PATH = "/v1/watermelon/sync"
# A push carries every row the device changed offline (about 3,000 typical messages fit),
# where the API's 64 KiB would refuse the push for good (the device would never sync again).
PUSH_MAX_BYTES = 1024 * 1024

# Percent-encoded (up to 12 bytes a character), the longest `migration` stays inside the
# request line's 8 KiB (`max_request_line_bytes`): a longer one would be a 414, not a 422.
MIGRATION_MAX_CHARS = 500

_LAST_PULLED_AT = Query(
    None, max_length=20, description="The `timestamp` of the previous pull; `null` (or absent) on the first sync"
)


def install(api: APIRouter, service: Watermelon, authenticate: Authenticator) -> None:
    tags: list[str | Enum] = ["watermelon"]

    @api.get(PATH, tags=tags, responses=responses())
    async def pull(
        last_pulled_at: str | None = _LAST_PULLED_AT,
        schema_version: int = Query(ge=1, le=1_000_000, description="The device's schema version (5 or later)"),
        migration: str | None = Query(
            None,
            max_length=MIGRATION_MAX_CHARS,
            description="`migration` as JSON (`null` unless the schema was migrated)",
        ),
        send_created_as_updated: bool = Query(
            False, description="The app passes `sendCreatedAsUpdated: true`: every row in `updated`, none in `created`"
        ),
        viewer: Viewer = Depends(authenticate),
    ) -> JSON:
        """`pullChanges`: `{changes: {conversations, messages: {created, updated, deleted}}, timestamp}`."""
        return JSON(
            await service.pull(
                viewer,
                watermelon.parse_last_pulled_at(last_pulled_at),
                schema_version,
                watermelon.parse_migration(migration, schema_version),
                created_as_updated=send_created_as_updated,
            )
        )

    @api.post(PATH, tags=tags, responses=responses(409))
    async def push(
        body: WatermelonPushBody,
        last_pulled_at: str | None = _LAST_PULLED_AT,
        viewer: Viewer = Depends(authenticate),
    ) -> JSON:
        """`pushChanges`: applies the device's changes at once, or refuses them all with 409
        `conflict` (pull, then push again). Answers `{experimentalRejectedIds}`."""
        changes = {
            name: TableChanges(table.created, table.updated, table.deleted)
            for name, table in (("conversations", body.conversations), ("messages", body.messages))
        }
        return JSON(await service.push(viewer, watermelon.parse_last_pulled_at(last_pulled_at), changes))
