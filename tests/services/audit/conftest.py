"""The ledger app in-process, trusting the test signing key of ``test_routes``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import services.audit
from services.audit.app import start as start_ledger
from services.audit.app import stop as stop_ledger
from services.audit.policy import router as policy_router
from services.audit.routes import router
from services.audit.settings import AuditSettings
from services.kit.app import create_service_app
from services.kit.tokens import KeySet, StaticKeySource
from tests.harness import serve_asgi
from tests.services.audit.test_routes import ISSUER, KEY


@dataclass
class LedgerApp:
    app: FastAPI
    http: httpx.AsyncClient


@pytest.fixture
async def ledger_app(make_settings: Callable[..., Any]) -> AsyncIterator[LedgerApp]:
    async def start(app: FastAPI) -> None:
        await start_ledger(app)
        app.state.token_keys = StaticKeySource(KeySet({"kt": KEY.public_key()}))

    app = create_service_app(
        settings=make_settings(AuditSettings, public_url=ISSUER, checkpoint_interval=3600),
        title="audit under test",
        migrations_dir=Path(services.audit.__file__).parent / "migrations",
        routers=[router, policy_router],
        on_startup=start,
        on_shutdown=stop_ledger,
        token_audience="/audit",
        audited=False,
    )
    async with serve_asgi(app) as http:
        yield LedgerApp(app, http)
