"""The audit service's ASGI app (``uvicorn --factory services.audit.app:create_app``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request

from services.audit.checkpoints import Checkpointer, TreeCache, load_or_create_key
from services.audit.ledger import Ledger
from services.audit.policy import load_policy
from services.audit.policy import router as policy_router
from services.audit.routes import router
from services.audit.settings import AuditSettings
from services.kit.app import create_service_app
from services.kit.audit import refusal_record
from services.kit.errors import Problem
from services.kit.protection import ProtectionPolicy

log = logging.getLogger(__name__)


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
    app.state.on_refused = _record_own_refusals(app)
    async with db.sessionmaker() as session:
        override = await load_policy(session)
    if override is not None:  # set by the security administrator: it wins over the settings
        app.state.protection_policy = ProtectionPolicy.from_override(override)


def _record_own_refusals(app: FastAPI) -> Callable[[Request, Problem], None]:
    """The ledger records the refusals it answers (a forged submission, an auditor's token
    short of the level) in itself, in the background: it has no audit client of its own."""
    pending: set[asyncio.Task[Any]] = set()

    def on_refused(request: Request, problem: Problem) -> None:
        task = asyncio.get_running_loop().create_task(
            app.state.ledger.append(refusal_record(request, problem))
        )
        pending.add(task)
        task.add_done_callback(done)

    def done(task: asyncio.Task[Any]) -> None:
        pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("audit.refusal_not_recorded", extra={"reason": str(task.exception())})

    return on_refused


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
        routers=[router, policy_router],
        on_startup=start,
        on_shutdown=stop,
        public_prefix="/audit",
        token_audience="/audit",  # noqa: S106 - an audience path, not a secret
        audited=False,
    )
