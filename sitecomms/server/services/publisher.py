"""What services need from the bus: telling every server process that an org's stream moved, or
that someone's access changed (the access-change log has news: services/access.py)."""

from __future__ import annotations

from typing import Protocol


class Publisher(Protocol):
    async def publish(self, org_id: str, position: int) -> None:
        """After a commit: the org's stream now reaches `position`. Never raises."""
        ...

    async def access_changed(self) -> None:
        """After a commit that logged an access change. Never raises."""
        ...


class NoPublisher:
    """For one-off commands with no listeners (the CLI on an embedded database)."""

    async def publish(self, org_id: str, position: int) -> None:
        return None

    async def access_changed(self) -> None:
        return None
