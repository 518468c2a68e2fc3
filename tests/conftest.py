"""Test backends: the zero-install default and the real servers.

Every integration test that takes ``backend`` runs twice: on ``embedded`` (SQLite files +
an embedded real Redis, what a newcomer gets) and on ``servers`` (the real PostgreSQL and
Redis this machine runs). Under ``CI=true`` an unreachable server fails the run; on a
developer's machine without them those cases are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import make_url

from services.kit.redis import EmbeddedRedis
from services.kit.settings import ServiceSettings

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
POSTGRES_URL = os.environ.get(
    "ONECARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("ONECARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SERVICES_WITH_DB = ("identity", "health", "social_security", "audit")

S = TypeVar("S", bound=ServiceSettings)


@dataclass(frozen=True)
class Backend:
    name: str
    # A server URL (each service gets ``<db>_<service>`` on it) or None for SQLite under var/.
    database_url: str | None
    redis_url: str


def _answers(url: str, default_port: int) -> bool:
    parsed = make_url(url)
    try:
        socket.create_connection(
            (parsed.host or "127.0.0.1", parsed.port or default_port), 1
        ).close()
    except OSError:
        return False
    return True


def require_servers() -> None:
    """Fail under CI, skip elsewhere, when PostgreSQL or Redis do not answer."""
    missing = [
        name
        for name, url, port in (("PostgreSQL", POSTGRES_URL, 5432), ("Redis", REDIS_URL, 6379))
        if not _answers(url, port)
    ]
    if missing:
        message = f"{' and '.join(missing)} not reachable ({POSTGRES_URL}, {REDIS_URL})"
        if IN_CI:
            pytest.fail(f"CI=true requires the real servers: {message}")
        pytest.skip(message)


def worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("embedded-redis"))
    yield server
    server.shutdown()


@pytest.fixture(scope="session")
def postgres_base_url() -> Iterator[str]:
    """A database name prefix of this test process's own; its databases are dropped after."""
    require_servers()
    base = f"onecard_test_{worker_id()}_{os.getpid()}"
    names = [f"{base}_{s}" for s in SERVICES_WITH_DB]
    asyncio.run(_drop_databases(names))
    yield make_url(POSTGRES_URL).set(database=base).render_as_string(hide_password=False)
    asyncio.run(_drop_databases(names))


async def _drop_databases(names: list[str]) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(
        make_url(POSTGRES_URL).set(drivername="postgresql+asyncpg"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            for name in names:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


@pytest.fixture(params=["embedded", "servers"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "embedded":
        server: EmbeddedRedis = request.getfixturevalue("embedded_redis")
        return Backend("embedded", None, server.url)
    return Backend("servers", request.getfixturevalue("postgres_base_url"), REDIS_URL)


@pytest.fixture
def make_settings(backend: Backend, tmp_path: Path) -> Callable[..., Any]:
    """Build a service's settings on this test's backend, with a Redis namespace of its own."""

    def make(cls: type[S], **overrides: Any) -> S:
        values: dict[str, Any] = {
            "environment": "test",
            "var_dir": tmp_path / "var",
            "database_url": backend.database_url,
            "redis_url": backend.redis_url,
            "redis_prefix": f"test:{uuid.uuid4().hex}:",
            # Auditing is off unless a test starts a ledger and names it (tests/services/kit).
            "audit_url": None,
        }
        if backend.database_url is not None:
            # A schema of its own per test: full isolation on the shared server, at the cost
            # of one CREATE SCHEMA (the databases are dropped when the test process ends).
            values["database_schema"] = f"t_{uuid.uuid4().hex[:16]}"
        values.update(overrides)
        return cls(**values)

    return make
