"""Liveness (`/healthz`) and readiness (`/readyz`: the database reads and accepts writes)."""

from __future__ import annotations

from fastapi import APIRouter

from sitecomms.server.api.responses import JSON, responses
from sitecomms.server.services.health import Health


def install(api: APIRouter, health: Health) -> None:
    @api.get("/healthz", tags=["health"])
    async def healthz() -> JSON:
        """The process is up."""
        return JSON({"status": "ok"})

    @api.get("/readyz", tags=["health"], responses={503: responses()[503]})
    async def readyz() -> JSON:
        """The process can serve: its database answers reads and commits writes (503 with the reason if not;
        probed at most once a second, so a balancer may check it at any rate)."""
        return JSON({"status": "ready", "database": await health.ready()})
