"""Every service gets the same operational surface from the app factory."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import inspect

from services.audit.app import create_app as create_audit
from services.audit.settings import AuditSettings
from services.kit.database import Database
from tests.conftest import Backend
from tests.harness import serve_asgi


async def test_a_service_migrates_its_own_database_and_is_ready(
    make_settings: Callable[..., Any], backend: Backend
) -> None:
    settings = make_settings(AuditSettings)
    async with serve_asgi(create_audit(settings)) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "service": "audit",
            "checks": {"database": "ok", "redis": "ok"},
        }
    db = Database.for_settings(settings)
    try:
        async with db.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
    finally:
        await db.dispose()
    assert "alembic_version_audit" in tables
    if backend.name == "servers":
        assert db.url.database.endswith("_audit")


async def test_starting_twice_finds_the_database_already_at_head(
    make_settings: Callable[..., Any],
) -> None:
    settings = make_settings(AuditSettings)
    for _ in range(2):
        async with serve_asgi(create_audit(settings)) as client:
            assert (await client.get("/readyz")).status_code == 200


async def test_readyz_names_redis_when_it_does_not_answer(
    make_settings: Callable[..., Any],
) -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    settings = make_settings(AuditSettings, redis_url="redis://127.0.0.1:1/0")
    async with serve_asgi(create_audit(settings)) as client:
        ready = await client.get("/readyz")
        assert (await client.get("/healthz")).status_code == 200
    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/problem+json"
    body = ready.json()
    assert body["checks"]["database"] == "ok"
    assert "ConnectionError" in body["checks"]["redis"]
    assert "redis" in body["detail"]


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_without_a_redis_url_a_service_starts_its_own_embedded_redis(
    make_settings: Callable[..., Any],
) -> None:
    settings = make_settings(AuditSettings, redis_url=None)
    async with serve_asgi(create_audit(settings)) as client:
        ready = await client.get("/readyz")
    assert ready.json()["checks"]["redis"] == "ok"


async def test_request_ids_are_minted_echoed_and_never_taken_blindly(
    make_settings: Callable[..., Any],
) -> None:
    async with serve_asgi(create_audit(make_settings(AuditSettings))) as client:
        minted = await client.get("/healthz")
        echoed = await client.get("/healthz", headers={"X-Request-ID": "hospital-42.req-0001"})
        refused = await client.get("/healthz", headers={"X-Request-ID": "bad id\nwith newline"})
    assert len(minted.headers["x-request-id"]) == 32
    assert echoed.headers["x-request-id"] == "hospital-42.req-0001"
    assert refused.headers["x-request-id"] != "bad id\nwith newline"
    assert len(refused.headers["x-request-id"]) == 32


async def test_metrics_count_requests_by_route_template(
    make_settings: Callable[..., Any],
) -> None:
    async with serve_asgi(create_audit(make_settings(AuditSettings))) as client:
        await client.get("/audit/healthz")
        metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'onecard_http_requests_total{method="GET",route="/audit/healthz"' in metrics.text


async def test_a_served_app_keeps_its_start_up_heap_out_of_full_collections(
    make_settings: Callable[..., Any],
) -> None:
    """``onecard serve`` marks its one app: once started, what start-up built is frozen (a full
    collection no longer walks it); an app built in a test process is not marked."""
    plain = create_audit(make_settings(AuditSettings))
    served = create_audit(make_settings(AuditSettings))
    served.state.freeze_startup_heap = True
    try:
        async with serve_asgi(plain):
            assert gc.get_freeze_count() == 0
        async with serve_asgi(served):
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
