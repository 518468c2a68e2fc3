"""The audit service's ASGI app (``uvicorn --factory services.audit.app:create_app``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.audit.ledger import Ledger
from services.audit.routes import router
from services.audit.settings import AuditSettings
from services.kit.app import create_service_app


async def start(app: FastAPI) -> None:
    app.state.ledger = Ledger(
        app.state.runtime.db, algorithm=app.state.runtime.settings.hash_algorithm
    )


async def stop(app: FastAPI) -> None:
    ledger: Ledger | None = getattr(app.state, "ledger", None)
    if ledger is not None:
        await ledger.close()


def create_app(settings: AuditSettings | None = None) -> FastAPI:
    return create_service_app(
        settings=settings or AuditSettings(),
        title="onecard audit ledger",
        description="Tamper-evident ledger of every access to personal data.",
        migrations_dir=Path(__file__).parent / "migrations",
        routers=[router],
        on_startup=start,
        on_shutdown=stop,
        public_prefix="/audit",
        token_audience="/audit",  # noqa: S106 - an audience path, not a secret
    )
