"""The citizen registry's router in an app of its own, on each test backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

import identity
from identity.citizens.routes import router
from identity.settings import IdentitySettings
from services.kit.app import create_service_app
from services.kit.database import Database
from tests.harness import serve_asgi

MIGRATIONS = Path(identity.__file__).parent / "migrations"


def citizens_app(settings: IdentitySettings, **options: Any) -> FastAPI:
    return create_service_app(
        settings=settings,
        title="onecard identity (citizens)",
        migrations_dir=MIGRATIONS,
        routers=[router],
        **options,
    )


@pytest.fixture
def settings(make_identity_settings: Callable[..., IdentitySettings]) -> IdentitySettings:
    return make_identity_settings()


@pytest.fixture
async def client(settings: IdentitySettings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_asgi(citizens_app(settings)) as client:
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
