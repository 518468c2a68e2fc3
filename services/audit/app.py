"""The audit service's ASGI app (``uvicorn --factory services.audit.app:create_app``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.audit.settings import AuditSettings
from services.kit.app import create_service_app


def create_app(settings: AuditSettings | None = None) -> FastAPI:
    return create_service_app(
        settings=settings or AuditSettings(),
        title="onecard audit ledger",
        description="Tamper-evident ledger of every access to personal data.",
        migrations_dir=Path(__file__).parent / "migrations",
        public_prefix="/audit",
    )
