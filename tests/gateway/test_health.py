"""The gateway's ``/healthz``: alive, and what it sees of each service and of Redis."""

from __future__ import annotations

from collections.abc import Callable

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.kit import topology
from tests.gateway.conftest import RunningDouble
from tests.harness import serve_asgi

MakeSettings = Callable[..., GatewaySettings]


async def test_healthz_reports_every_service_up_with_a_closed_circuit(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    urls = {spec.name: upstream.url for spec in topology.SERVICES}
    async with serve_asgi(create_app(gateway_settings(urls))) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["service"] == "gateway"
    assert body["redis"] == "up"
    assert body["services"] == {
        name: {"url": upstream.url, "circuit": "closed", "status": "up"} for name in urls
    }
    # The probes ask each service for its own /healthz.
    assert {s.path for s in upstream.seen} == {"/healthz"}


async def test_healthz_names_the_service_that_is_down_and_its_open_circuit(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    urls = {spec.name: upstream.url for spec in topology.SERVICES if spec.name != "audit"}
    settings = gateway_settings(urls, breaker_failures=2, breaker_open_seconds=30)
    async with serve_asgi(create_app(settings)) as client:
        before = (await client.get("/healthz")).json()
        for _ in range(2):
            assert (await client.get("/audit/records")).status_code == 503
        after = (await client.get("/healthz")).json()
    assert before["status"] == "degraded"
    assert before["services"]["audit"]["status"] == "down (ConnectError)"
    assert before["services"]["audit"]["circuit"] == "closed"
    assert after["services"]["audit"]["circuit"] == "open"
    assert all(
        after["services"][name] == {"url": upstream.url, "circuit": "closed", "status": "up"}
        for name in urls
    )


async def test_healthz_shows_a_service_answering_with_an_error(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    upstream.script("healthz", status=500, body=b"broken")
    async with serve_asgi(create_app(gateway_settings({"health": upstream.url}))) as client:
        body = (await client.get("/healthz")).json()
    assert body["status"] == "degraded"
    assert body["services"]["health"]["status"] == "http 500"
