"""When a service is slow, down, flaky or comes back: what callers of the gateway see.

These do not depend on which Redis backs the rate limit, so they run on the embedded backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.conftest import (
    RunningDouble,
    UpstreamDouble,
    dead_url,
    gateway_server,
    http_ok,
    raw_upstream,
)
from tests.harness import free_port, serve_asgi, server_thread, wait_until

pytestmark = pytest.mark.parametrize("backend", ["embedded"], indirect=True)

MakeSettings = Callable[..., GatewaySettings]
PROBLEM = "application/problem+json"


async def test_a_service_slower_than_its_timeout_gets_504_naming_it(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    settings = gateway_settings(
        {"identity": upstream.url, "health": upstream.url}, upstream_timeouts={"identity": 0.3}
    )
    async with serve_asgi(create_app(settings)) as client:
        started = time.monotonic()
        slow = await client.get("/identity/slow?seconds=10")
        elapsed = time.monotonic() - started
        # The same wait is fine for a service whose timeout is longer.
        patient = await client.get("/fhir/slow?seconds=0.5")
    assert slow.status_code == 504
    assert slow.headers["content-type"] == PROBLEM
    body = slow.json()
    assert body["service"] == "identity"
    assert "identity" in body["detail"]
    assert "0.3 s" in body["detail"]
    assert elapsed < 2
    # A timed-out request may still be running at the service: never sent twice.
    assert [s.path for s in upstream.seen[:1]] == ["/identity/slow"]
    assert patient.status_code == 200
    assert len(upstream.seen) == 2


async def test_a_service_that_is_down_gives_503_for_its_routes_only(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    # identity (/identity and /.well-known) is down; the other services answer.
    up = {"health": upstream.url, "social_security": upstream.url, "audit": upstream.url}
    async with serve_asgi(create_app(gateway_settings(up))) as client:
        down = [await client.get(p) for p in ("/identity/me", "/.well-known/jwks.json")]
        fine = [
            await client.get(p)
            for p in ("/fhir/Patient", "/insurance/claims", "/social-security/x", "/audit/me")
        ]
    for response in down:
        assert response.status_code == 503
        assert response.headers["content-type"] == PROBLEM
        assert int(response.headers["retry-after"]) >= 1
        body = response.json()
        assert body["service"] == "identity"
        assert "identity service is unavailable" in body["detail"]
    assert [r.status_code for r in fine] == [200, 200, 200, 200]


async def test_after_repeated_failures_the_circuit_opens_and_closes_when_the_service_returns(
    gateway_settings: MakeSettings,
) -> None:
    url = dead_url()
    port = int(url.rsplit(":", 1)[1])
    # Open long enough that starting the service again surely happens within it.
    settings = gateway_settings({"identity": url}, breaker_failures=3, breaker_open_seconds=1.5)
    async with serve_asgi(create_app(settings)) as client:
        failures = [await client.get("/identity/me") for _ in range(3)]
        assert [r.status_code for r in failures] == [503, 503, 503]

        # The service is back on the same port, but the circuit is open: refused at once,
        # without the gateway contacting it.
        service = UpstreamDouble()
        with server_thread(service, port=port):
            refused = await client.get("/identity/me")
            assert refused.status_code == 503
            assert "circuit open" in refused.json()["detail"]
            assert 1 <= int(refused.headers["retry-after"]) <= 2
            assert service.seen == []
            health = (await client.get("/healthz")).json()
            assert health["services"]["identity"]["circuit"] == "open"

            # Once the open period ends, a probe goes through and the service is served
            # again: no restart of the gateway.
            async def served() -> bool:
                return (await client.get("/identity/me")).status_code == 200

            await wait_until(served, timeout=5)
            assert (await client.get("/identity/me")).status_code == 200
            health = (await client.get("/healthz")).json()
    assert health["services"]["identity"]["circuit"] == "closed"
    assert health["services"]["identity"]["status"] == "up"


@contextlib.contextmanager
def standin_process(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """tests/gateway/standin.py as its own process on ``port``, killed at the end at the latest."""
    command = [sys.executable, "-m", "uvicorn", "tests.gateway.standin:app", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--log-level", "warning"],
        cwd=Path(__file__).parents[2],
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


async def answers(url: str) -> bool:
    async with httpx.AsyncClient(timeout=1) as client:
        try:
            return (await client.get(url)).status_code == 200
        except httpx.HTTPError:
            return False


async def test_a_service_killed_mid_request_gives_503_and_is_served_again_after_restart(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    port = free_port()
    settings = gateway_settings(
        {"identity": f"http://127.0.0.1:{port}", "health": upstream.url},
        breaker_failures=3,
        breaker_open_seconds=0.5,
    )
    async with serve_asgi(create_app(settings)) as client:
        with standin_process(port) as service:
            await wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), timeout=15)
            assert (await client.get("/identity/me")).status_code == 200
            in_flight = [
                asyncio.create_task(client.get("/identity/slow?seconds=30")) for _ in range(3)
            ]
            await asyncio.sleep(0.3)  # let them reach the service (if not, they fail alike)
            service.kill()
            started = time.monotonic()
            cut_off = await asyncio.gather(*in_flight)
            elapsed = time.monotonic() - started
            others = await client.get("/fhir/Patient")
        assert [r.status_code for r in cut_off] == [503, 503, 503]
        assert all(r.headers["content-type"] == PROBLEM for r in cut_off)
        assert elapsed < 3  # well within the identity timeout of 5 s
        assert others.status_code == 200

        with standin_process(port):

            async def served() -> bool:
                return (await client.get("/identity/me")).status_code == 200

            await wait_until(served, timeout=15)


async def test_an_idempotent_request_whose_connection_fails_is_retried_once(
    gateway_settings: MakeSettings,
) -> None:
    # The first connection is dropped before any answer (as a restarting service or a stale
    # pooled connection would); the retry succeeds.
    with raw_upstream(lambda n: None if n == 1 else http_ok(b"second try")) as service:
        async with serve_asgi(create_app(gateway_settings({"identity": service.url}))) as client:
            response = await client.get("/identity/me")
    assert response.status_code == 200
    assert response.text == "second try"
    assert len(service.request_lines) == 2


async def test_an_idempotent_request_is_retried_at_most_the_configured_times(
    gateway_settings: MakeSettings,
) -> None:
    with raw_upstream(lambda n: None) as service:
        settings = gateway_settings({"identity": service.url}, idempotent_attempts=3)
        async with serve_asgi(create_app(settings)) as client:
            response = await client.get("/identity/me")
    assert response.status_code == 503
    assert len(service.request_lines) == 3


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_non_idempotent_request_is_never_retried(
    gateway_settings: MakeSettings, method: str
) -> None:
    # The service may have acted before the connection dropped: sending it again could
    # settle a bill twice. The caller gets the failure instead.
    with raw_upstream(lambda n: None if n == 1 else http_ok()) as service:
        settings = gateway_settings({"social_security": service.url})
        async with serve_asgi(create_app(settings)) as client:
            response = await client.request(method, "/insurance/claims", content=b'{"a": 1}')
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM
    assert len(service.request_lines) == 1


async def test_a_response_cut_off_mid_body_is_not_passed_off_as_complete(
    gateway_settings: MakeSettings,
) -> None:
    # The service promises 100 000 bytes, sends 1 000 and closes: the caller must see a
    # broken transfer, not a short body that looks whole.
    truncated = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"z" * 1000
    with raw_upstream(lambda _: truncated) as service:
        app = create_app(gateway_settings({"health": service.url}))
        with gateway_server(app) as gateway:
            async with httpx.AsyncClient(base_url=gateway.url) as client:
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get("/fhir/Binary/b-1")
                # The gateway itself carries on.
                assert (await client.get("/healthz")).status_code == 200


async def test_a_service_that_stops_reading_an_upload_gets_504_in_its_timeout(
    gateway_settings: MakeSettings,
) -> None:
    # The service accepts the connection and never reads: once the socket's buffers are full,
    # the upload stalls. Each chunk must be taken within the service's timeout, else 504
    # (the request may have reached the service: it is not sent again).
    with _never_reading_server() as url:
        settings = gateway_settings(
            {"health": url}, upstream_timeouts={"health": 0.5}, max_body_bytes=64 * 1024 * 1024
        )
        async with serve_asgi(create_app(settings)) as client:
            started = time.monotonic()
            response = await client.post("/fhir/Binary", content=b"x" * (32 * 1024 * 1024))
            elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["service"] == "health"
    assert elapsed < 5


@contextlib.contextmanager
def _never_reading_server() -> Iterator[str]:
    """A service that accepts connections and never reads from them."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.05)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        listener.close()
