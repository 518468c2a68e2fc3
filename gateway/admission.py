"""The checks a request passes before the gateway forwards it, in order.

1. The per-address rate limit, generous (many users may share one address), on every request
   before any crypto: a flood is refused cheaply, made-up tokens included.
2. The bearer token, when one is sent: verified for the audience of the service the route
   belongs to and checked for revocation, exactly as the service will check it again (defence
   in depth, DESIGN.md "Public entry"). Routes that need no token (the JWKS, the token endpoint)
   pass without one; each service decides which of its routes require one.
3. The per-client rate limit, keyed by who is verifiably calling: the verified token's
   ``client_id`` and ``sub``, else (no token, or one not ours to judge) the peer address. Never
   by the unverified ``Authorization`` value: every made-up token would get a fresh budget.

4. The graded-protection policy (:class:`Protection`, :mod:`services.kit.protection`): the
   route's level, from the same table the services enforce, against the verified token's
   ``acr``. A refusal never reaches the service; it goes to the refusal hook (a
   ``protection.refused`` log event until the audit client records it in the ledger).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.requests import Request

from gateway.ratelimit import CHECK_TIMEOUT, Limit, RateLimiter
from services.kit.auth import REALM, check_bearer
from services.kit.errors import Problem
from services.kit.protection import (
    ProtectionPolicy,
    ProtectionRefused,
    RefusalHook,
    emit_refusal,
    log_refusal,
)
from services.kit.revocation import Revocations
from services.kit.tokens import REMEMBERED_TOKENS, AccessToken, KeySource, TokenVerifier
from services.kit.topology import ServiceSpec

Admission = Callable[[Request, ServiceSpec], Awaitable[None]]

# Public prefixes that are not resource servers: no token is issued for them.
_NOT_AN_AUDIENCE = frozenset({"/.well-known"})
_PUBLIC_METADATA = "/.well-known/"


def peer_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def client_key(request: Request) -> str:
    """Who is calling, for the per-client limit: the verified token's client and subject if
    the bearer check accepted one, else the peer address.

    Hashed, because token claims go to Redis keys only in a form that names no one.
    """
    token: AccessToken | None = getattr(request.state, "access_token", None)
    if token is not None:
        principal = f"{token.client_id}\x00{token.sub}".encode()
        return "tok:" + hashlib.sha256(principal).hexdigest()[:32]
    return "ip:" + peer_address(request)


class RateLimit:
    """One rate limit, applied to the caller ``key`` names."""

    def __init__(
        self,
        limiter: RateLimiter,
        limit: Limit,
        *,
        key: Callable[[Request], str],
        what: str = "",
    ) -> None:
        self.limiter = limiter
        self.limit = limit
        self.key = key
        self.what = what

    async def __call__(self, request: Request, spec: ServiceSpec) -> None:
        decision = await self.limiter.check(self.limit, self.key(request))
        if not decision.allowed:
            raise Problem(
                429,
                f"rate limit of {self.limit.per_second:g} requests/s{self.what} exceeded; "
                f"retry after {decision.retry_after_seconds} s",
                headers={"Retry-After": str(decision.retry_after_seconds)},
            )


class BoundedRevocations(Revocations):
    """Revocation checks that give up after ``CHECK_TIMEOUT``, as the rate limit does.

    A Redis that accepts connections and never answers would otherwise hold every request
    carrying a token for the Redis client's socket timeout (2 s) before the refusal. It is
    still refused (fail closed, 503): only the wait is bounded.
    """

    async def check(self, token: AccessToken) -> None:
        try:
            # asyncio.timeout, not wait_for: no task of its own per check (Python 3.11).
            async with asyncio.timeout(CHECK_TIMEOUT):
                await super().check(token)
        except TimeoutError:
            # As a RedisError, so check_bearer answers 503 "revocation status unavailable".
            raise RedisTimeoutError(f"no answer from Redis within {CHECK_TIMEOUT:g} s") from None


class BearerToken:
    """Verifies a sent bearer token for the audience of the route's service."""

    def __init__(
        self,
        *,
        issuer: str,
        services: tuple[ServiceSpec, ...],
        keys: KeySource,
        revocations: Revocations,
        leeway: float,
    ) -> None:
        base = issuer.rstrip("/")
        self.revocations = revocations
        self.verifiers = {
            spec.name: TokenVerifier(
                issuer=issuer,
                audience=[base + p for p in spec.prefixes if p not in _NOT_AN_AUDIENCE],
                keys=keys,
                leeway=leeway,
                remember=REMEMBERED_TOKENS,
            )
            for spec in services
            if any(p not in _NOT_AN_AUDIENCE for p in spec.prefixes)
        }

    async def __call__(self, request: Request, spec: ServiceSpec) -> None:
        values = request.headers.getlist("authorization")
        if not values or request.url.path.startswith(_PUBLIC_METADATA):
            # Discovery documents and keys are public: a token sent along is not ours to judge.
            return
        if len(values) > 1:
            # RFC 6750 section 3.1 invalid_request, with the challenge a service would send.
            raise Problem(
                400,
                "more than one Authorization header",
                headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_request"'},
            )
        scheme, _, credentials = values[0].partition(" ")
        if scheme.lower() != "bearer":
            return  # not ours to judge (e.g. HTTP Basic on a future route); the service decides
        verifier = self.verifiers.get(spec.name)
        if verifier is not None:
            request.state.access_token = await check_bearer(
                credentials.strip(), verifier, self.revocations
            )


class Protection:
    """The graded-protection check: the route's level against the verified token's ``acr``.

    ``require_token`` False forwards a request without a token to a protected route for the
    service to refuse (it still refuses a token whose acr falls short); the gateway settings
    allow it only outside production (see ``GatewaySettings.protection_require_token``).
    """

    def __init__(
        self,
        policy: ProtectionPolicy,
        *,
        require_token: bool = True,
        on_refusal: RefusalHook = log_refusal,
    ) -> None:
        self.policy = policy
        self.require_token = require_token
        self.on_refusal = on_refusal

    async def __call__(self, request: Request, spec: ServiceSpec) -> None:
        token: AccessToken | None = getattr(request.state, "access_token", None)
        # The newest policy the security administrator set (services.kit.policy_watch).
        policy: ProtectionPolicy = getattr(request.app.state, "protection_policy", self.policy)
        decision = policy.decide(request.method, request.url.path, token)
        if decision.allowed or (token is None and not self.require_token):
            request.state.protection = decision
            return
        await emit_refusal(self.on_refusal, decision, token, request)
        raise ProtectionRefused(decision)
