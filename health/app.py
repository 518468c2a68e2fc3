"""The health service's ASGI app (``uvicorn --factory health.app:create_app``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from health.settings import HealthSettings
from health.smart import router as smart_router
from services.kit.app import create_service_app


def create_app(settings: HealthSettings | None = None) -> FastAPI:
    return create_service_app(
        settings=settings or HealthSettings(),
        title="onecard health record store",
        description="FHIR R4 electronic health record store.",
        migrations_dir=Path(__file__).parent / "migrations",
        routers=[smart_router],
    )
