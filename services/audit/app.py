"""The audit service's ASGI app (``uvicorn --factory services.audit.app:create_app``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.audit.checkpoints import Checkpointer, TreeCache, load_or_create_key
from services.audit.ledger import Ledger
from services.audit.routes import router
from services.audit.settings import AuditSettings
from services.kit.app import create_service_app


async def start(app: FastAPI) -> None:
    settings: AuditSettings = app.state.runtime.settings
    db = app.state.runtime.db
    app.state.ledger = Ledger(db, algorithm=settings.hash_algorithm)
    key = await load_or_create_key(db, settings.checkpoint_key_secret())
    app.state.checkpoint_key = key
    app.state.checkpointer = Checkpointer(
        db, key, origin=settings.origin(), algorithm=settings.hash_algorithm
    )
    app.state.trees = TreeCache(db, algorithm=settings.hash_algorithm)
    app.state.checkpointer.start(settings.checkpoint_interval)


async def stop(app: FastAPI) -> None:
    checkpointer: Checkpointer | None = getattr(app.state, "checkpointer", None)
    if checkpointer is not None:
        await checkpointer.stop()
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
