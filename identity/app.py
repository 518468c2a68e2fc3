"""The identity service's ASGI app (``uvicorn --factory identity.app:create_app``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from identity.settings import IdentitySettings
from services.kit.app import create_service_app


def create_app(settings: IdentitySettings | None = None) -> FastAPI:
    return create_service_app(
        settings=settings or IdentitySettings(),
        title="onecard identity",
        description="Citizens, the card PKI and card lifecycle, terminals and tokens.",
        migrations_dir=Path(__file__).parent / "migrations",
        public_prefix="/identity",
    )
