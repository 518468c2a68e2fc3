"""The citizen registry through the whole identity service, on each test backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from identity.app import create_app
from identity.clients.bootstrap import add_client
from identity.clients.models import ClientKind
from identity.settings import IdentitySettings
from services.kit.database import Database
from tests.harness import serve_asgi


@asynccontextmanager
async def citizens_client(settings: IdentitySettings) -> AsyncIterator[httpx.AsyncClient]:
    """The identity service in-process, its client holding a registration desk's token."""
    app = create_app(settings)
    async with serve_asgi(app) as client:
        desk = await add_client(
            app.state.runtime.db,
            name="registration desk",
            kind=ClientKind.ADMIN,
            scopes=["citizen.manage"],
            base_url=settings.public_url,
        )
        client.headers["Authorization"] = f"Bearer {await desk.fetch_token(client)}"
        yield client


@pytest.fixture
def settings(make_identity_settings: Callable[..., IdentitySettings]) -> IdentitySettings:
    return make_identity_settings()


@pytest.fixture
async def client(settings: IdentitySettings) -> AsyncIterator[httpx.AsyncClient]:
    async with citizens_client(settings) as client:
        yield client


async def raw_rows(settings: IdentitySettings, sql: str = "SELECT * FROM citizens") -> list[Any]:
    """Rows straight from the table, bypassing every model (what a database reader sees)."""
    db = Database.for_settings(settings)
    try:
        async with db.engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(text(sql))]
    finally:
        await db.dispose()


async def count_rows(settings: IdentitySettings) -> int:
    # The "servers" backend shares one database per xdist worker between tests; keys differ
    # per test, so rows are compared before and after, never against zero.
    [row] = await raw_rows(settings, "SELECT count(*) AS n FROM citizens")
    return int(row["n"])
