"""The rate limits (per address, per client), kept in the backend's real Redis, and what happens
without Redis."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable

import pytest

from gateway.app import create_app
from gateway.ratelimit import Limit, RateLimiter
from gateway.settings import GatewaySettings
from services.kit.redis import connect as redis_connect
from tests.gateway.conftest import RunningDouble, TokenIssuer, new_key, silent_server
from tests.harness import serve_asgi

MakeSettings = Callable[..., GatewaySettings]
PROBLEM = "application/problem+json"


@pytest.fixture
def alice(issuer: TokenIssuer) -> dict[str, str]:
    return {"Authorization": issuer.bearer(sub="p-alice")}


@pytest.fixture
def bob(issuer: TokenIssuer) -> dict[str, str]:
    return {"Authorization": issuer.bearer(sub="p-bob")}


async def test_requests_beyond_the_burst_get_429_with_retry_after(
    gateway_settings: MakeSettings, upstream: RunningDouble, alice: dict[str, str]
) -> None:
    # 0.5/s with a burst of 3: three at once pass, the fourth waits about two seconds.
    settings = gateway_settings(
        {"identity": upstream.url}, rate_limit_per_second=0.5, rate_limit_burst=3
    )
    async with serve_asgi(create_app(settings)) as client:
        allowed = [await client.get("/identity/me", headers=alice) for _ in range(3)]
        refused = await client.get("/identity/me", headers=alice)
    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == PROBLEM
    assert 1 <= int(refused.headers["retry-after"]) <= 2
    assert "rate limit" in refused.json()["detail"]
    assert len(upstream.seen) == 3  # the refused request never reached the service


async def test_each_client_has_a_budget_of_its_own(
    gateway_settings: MakeSettings,
    upstream: RunningDouble,
    alice: dict[str, str],
    bob: dict[str, str],
) -> None:
    settings = gateway_settings(
        {"identity": upstream.url}, rate_limit_per_second=0.5, rate_limit_burst=2
    )
    async with serve_asgi(create_app(settings)) as client:
        alices = [(await client.get("/identity/me", headers=alice)).status_code for _ in range(3)]
        bobs = [(await client.get("/identity/me", headers=bob)).status_code for _ in range(2)]
        # No credential: the caller's address is the client.
        anonymous = [(await client.get("/identity/me")).status_code for _ in range(3)]
    assert alices == [200, 200, 429]
    assert bobs == [200, 200]
    assert anonymous == [200, 200, 429]


async def test_a_refused_client_is_served_again_once_its_budget_refills(
    gateway_settings: MakeSettings, upstream: RunningDouble, alice: dict[str, str]
) -> None:
    settings = gateway_settings(
        {"identity": upstream.url}, rate_limit_per_second=2, rate_limit_burst=1
    )
    async with serve_asgi(create_app(settings)) as client:
        first = await client.get("/identity/me", headers=alice)
        refused = await client.get("/identity/me", headers=alice)
        await asyncio.sleep(0.6)  # more than the 500 ms one request costs at 2/s
        again = await client.get("/identity/me", headers=alice)
    assert [first.status_code, refused.status_code, again.status_code] == [200, 429, 200]


async def test_gateways_sharing_a_redis_share_each_clients_budget(
    gateway_settings: MakeSettings, upstream: RunningDouble, alice: dict[str, str]
) -> None:
    # Run several gateways behind a load balancer and a client still gets one budget.
    shared = {"redis_prefix": f"test:{uuid.uuid4().hex}:", "rate_limit_per_second": 0.5}
    one = gateway_settings({"identity": upstream.url}, rate_limit_burst=2, **shared)
    two = gateway_settings({"identity": upstream.url}, rate_limit_burst=2, **shared)
    async with serve_asgi(create_app(one)) as first, serve_asgi(create_app(two)) as second:
        statuses = [
            (await first.get("/identity/me", headers=alice)).status_code,
            (await second.get("/identity/me", headers=alice)).status_code,
            (await first.get("/identity/me", headers=alice)).status_code,
            (await second.get("/identity/me", headers=alice)).status_code,
        ]
    assert statuses == [200, 200, 429, 429]


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)  # Redis is replaced anyway
async def test_without_redis_the_gateway_keeps_forwarding_and_reports_degraded(
    gateway_settings: MakeSettings, upstream: RunningDouble, alice: dict[str, str]
) -> None:
    # Port 1 on loopback: nothing listens, connections are refused at once.
    settings = gateway_settings(
        dict.fromkeys(("identity", "health", "social_security", "audit"), upstream.url),
        redis_url="redis://127.0.0.1:1/0",
        rate_limit_per_second=0.5,
        rate_limit_burst=1,
    )
    async with serve_asgi(create_app(settings)) as client:
        # The rate limit fails open: without Redis there is no budget to exhaust.
        forwarded = [await client.get("/identity/me") for _ in range(3)]
        # Token revocation fails closed: a token whose status cannot be read is not accepted
        # (DESIGN.md "Tokens": a revoked token is refused by the gateway).
        with_token = await client.get("/identity/me", headers=alice)
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
    assert [r.status_code for r in forwarded] == [200, 200, 200]
    assert with_token.status_code == 503
    assert with_token.headers["content-type"] == PROBLEM
    assert with_token.json()["detail"] == (
        "cannot verify tokens right now: revocation status unavailable"
    )
    # The token request never reached the service (the rest are /healthz probes).
    assert [s.path for s in upstream.seen if s.path == "/identity/me"] == ["/identity/me"] * 3
    assert all(s.header("authorization") is None for s in upstream.seen)
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["redis"].startswith("down")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["redis"] != "ok"


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)  # Redis is replaced anyway
async def test_a_redis_that_hangs_delays_callers_only_briefly(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    # Worse than a refused connection: Redis accepts and never answers. Callers must not each
    # wait out the Redis client's socket timeout.
    with silent_server() as redis:
        settings = gateway_settings(
            {"identity": upstream.url}, redis_url=f"redis://127.0.0.1:{redis.port}/0"
        )
        async with serve_asgi(create_app(settings)) as client:
            started = time.monotonic()
            statuses = [(await client.get("/identity/me")).status_code for _ in range(5)]
            elapsed = time.monotonic() - started
    assert statuses == [200] * 5
    assert elapsed < 1.5


# --- Who is a client: the verified token, never the unverified header ---------------------


async def test_made_up_tokens_get_no_budgets_of_their_own(
    gateway_settings: MakeSettings, upstream: RunningDouble, issuer: TokenIssuer
) -> None:
    # Keyed by the Authorization value, every invented token was a fresh budget and one more
    # signature check. Before any crypto, all of them count against their address.
    settings = gateway_settings(
        {"identity": upstream.url},
        rate_limit_per_address_per_second=0.5,
        rate_limit_per_address_burst=3,
    )
    forged = [{"Authorization": issuer.bearer(key=new_key(), sub=f"p-{n}")} for n in range(5)]
    async with serve_asgi(create_app(settings)) as client:
        statuses = [(await client.get("/identity/me", headers=h)).status_code for h in forged]
        refused = await client.get("/identity/me", headers=forged[0])
    # Three signature checks fail (401); then the address is refused before any is made.
    assert statuses == [401, 401, 401, 429, 429]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == PROBLEM
    assert "from one address" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) >= 1
    assert upstream.seen == []


async def test_a_client_holding_many_tokens_still_has_one_budget(
    gateway_settings: MakeSettings, upstream: RunningDouble, issuer: TokenIssuer
) -> None:
    # Fresh tokens (new jti) for the same client and subject: one budget between them.
    settings = gateway_settings(
        {"identity": upstream.url}, rate_limit_per_second=0.5, rate_limit_burst=2
    )
    tokens = [{"Authorization": issuer.bearer(sub="p-alice")} for _ in range(3)]
    async with serve_asgi(create_app(settings)) as client:
        statuses = [(await client.get("/identity/me", headers=t)).status_code for t in tokens]
    assert statuses == [200, 200, 429]


async def test_the_address_limit_spans_every_client_behind_the_address(
    gateway_settings: MakeSettings, upstream: RunningDouble, issuer: TokenIssuer
) -> None:
    # Per-client budgets to spare, but the address as a whole has had its share.
    settings = gateway_settings(
        {"identity": upstream.url},
        rate_limit_per_address_per_second=0.5,
        rate_limit_per_address_burst=4,
    )
    people = [{"Authorization": issuer.bearer(sub=f"p-{n}")} for n in range(3)]
    async with serve_asgi(create_app(settings)) as client:
        statuses = [
            (await client.get("/identity/me", headers=h)).status_code for h in people + people
        ]
    assert statuses == [200, 200, 200, 200, 429, 429]


# --- Batches: cells taken from Redis several at a time, the budget still shared -----------


async def test_gateways_taking_cells_in_batches_still_share_one_budget(
    make_settings: Callable[..., GatewaySettings],
) -> None:
    # A burst of 100 at 10/s lets each limiter take up to 10 cells per script call. Two
    # limiters (two gateways) on one Redis, asked 150 times in turn within well under a
    # second, admit the burst give or take what batching may hold back or add: at most 9
    # cells per gateway either way, and the 10/s refill over the elapsed time.
    settings = make_settings(GatewaySettings)
    connection = redis_connect(
        url=settings.redis_url, var_dir=settings.var_dir, prefix=settings.redis_prefix
    )
    limit = Limit("test", per_second=10, burst=100)
    assert limit.max_batch == 10
    limiters = [RateLimiter(connection), RateLimiter(connection)]
    try:
        started = time.monotonic()
        decisions = [await limiters[n % 2].check(limit, "alice") for n in range(150)]
        elapsed = time.monotonic() - started
    finally:
        await connection.close()
    admitted = sum(d.allowed for d in decisions)
    refill = math.ceil(10 * elapsed)
    assert not any(d.degraded for d in decisions)
    assert 100 - 2 * 9 <= admitted <= 100 + 2 * 9 + refill
    refused = [d for d in decisions if not d.allowed]
    assert refused
    assert all(d.retry_after_seconds >= 1 for d in refused)


async def test_a_slow_client_takes_one_cell_at_a_time(
    make_settings: Callable[..., GatewaySettings],
) -> None:
    # A batch follows the client's own pace: one request now and then never takes (and lets
    # lapse) more than the one cell it spends, so its budget is not drained by batching.
    settings = make_settings(GatewaySettings)
    connection = redis_connect(
        url=settings.redis_url, var_dir=settings.var_dir, prefix=settings.redis_prefix
    )
    limit = Limit("test", per_second=10, burst=100)
    limiter = RateLimiter(connection)
    other_gateway = RateLimiter(connection)
    try:
        for _ in range(3):
            assert (await limiter.check(limit, "bob")).allowed
            await asyncio.sleep(0.6)  # slower than half a batch lifetime per request
        # Everything but the three cells spent is still there for another gateway.
        others = [await other_gateway.check(limit, "bob") for _ in range(97)]
    finally:
        await connection.close()
    assert all(d.allowed for d in others)
