"""Client authentication with a signed assertion: ``private_key_jwt`` (RFC 7523 section 2.2).

This is how SMART Backend Services authenticate a hospital system, and how our terminals and
administrators authenticate too: the client signs a short JWT with the private key whose public
half it registered, addressed to our token endpoint. Rules (SMART backend-services, RFC 7523
section 3): ``iss`` = ``sub`` = client id, ``aud`` = the token endpoint URL, ``exp`` at most five
minutes ahead, a ``jti`` never seen before (kept in Redis until the assertion expires).
"""

from __future__ import annotations

import time
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from identity.clients import repository as clients
from identity.clients.models import Client
from identity.tokens.forms import OAuthError
from services.kit.redis import RedisConnection
from services.kit.tokens import (
    KeySet,
    StaticKeySource,
    TokenError,
    TokenVerifier,
    load_jwk,
    unverified_claims,
)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_SECONDS = 300


async def authenticate_client(
    *,
    session: AsyncSession,
    redis: RedisConnection,
    assertion_type: str | None,
    assertion: str | None,
    token_endpoint: str,
    leeway: float,
) -> Client:
    """The registered, active client that signed ``assertion``, or an ``invalid_client`` error."""
    if assertion_type != ASSERTION_TYPE or not assertion:
        raise OAuthError(
            "invalid_client",
            f"authenticate with client_assertion_type={ASSERTION_TYPE} and a client_assertion",
            status=401,
        )
    try:
        claimed = unverified_claims(assertion).get("iss")
    except TokenError as exc:
        raise OAuthError("invalid_client", f"client assertion: {exc.reason}", status=401) from None
    client = await clients.get(session, claimed) if isinstance(claimed, str) else None
    if client is None or not client.active:
        raise OAuthError("invalid_client", "unknown or inactive client", status=401)

    verifier = TokenVerifier(
        issuer=client.client_id,
        audience=token_endpoint,
        keys=StaticKeySource(KeySet({client.jwk["kid"]: load_jwk(client.jwk)})),
        leeway=leeway,
    )
    try:
        claims: dict[str, Any] = await verifier.verify_claims(
            assertion,
            typ="JWT",
            max_lifetime=None,
            require=("iss", "sub", "aud", "exp", "jti"),  # RFC 7523 allows an assertion without iat
        )
    except TokenError as exc:
        raise OAuthError("invalid_client", f"client assertion: {exc.reason}", status=401) from None
    if claims["sub"] != client.client_id:
        raise OAuthError("invalid_client", "client assertion: sub must equal iss", status=401)
    now = time.time()
    if claims["exp"] > now + MAX_ASSERTION_SECONDS + leeway:
        raise OAuthError(
            "invalid_client",
            f"client assertion: exp more than {MAX_ASSERTION_SECONDS} s ahead",
            status=401,
        )
    # Single use: SET NX succeeds once per jti while the assertion could still be accepted.
    ttl = max(1, int(claims["exp"] - now + leeway) + 1)
    fresh = await redis.client.set(
        redis.key("assertion-jti", client.client_id, str(claims["jti"])), b"1", nx=True, ex=ttl
    )
    if not fresh:
        raise OAuthError("invalid_client", "client assertion: jti already used", status=401)
    return client
