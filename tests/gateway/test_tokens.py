"""The gateway's token check: a bearer token is verified for the route's service and checked for
revocation before anything is forwarded (DESIGN.md "Public entry" and "Tokens").

Verification does not depend on which Redis holds revocations, so only the revocation tests run
on both backends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.kit.redis import RedisConnection
from services.kit.revocation import Revocations
from tests.gateway.conftest import (
    RunningDouble,
    TokenIssuer,
    dead_url,
    new_key,
    silent_server,
)
from tests.harness import serve_asgi

MakeSettings = Callable[..., GatewaySettings]
PROBLEM = "application/problem+json"
EMBEDDED = pytest.mark.parametrize("backend", ["embedded"], indirect=True)


def routed(upstream: RunningDouble) -> dict[str, str]:
    """Every service routed to the one double, so any prefix reaches it."""
    return dict.fromkeys(("identity", "health", "social_security", "audit"), upstream.url)


def assert_problem(response: httpx.Response, status: int, detail: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["detail"] == detail
    assert body["request_id"] == response.headers["x-request-id"]


def assert_invalid_token(response: httpx.Response, detail: str) -> None:
    """RFC 6750 section 3.1: 401 with a challenge naming invalid_token and the reason."""
    assert_problem(response, 401, detail)
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="onecard", error="invalid_token", error_description="{detail}"'
    )


# --- Hand-made tokens: what an attacker or a broken client sends ----------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any], payload: dict[str, Any], signature: str) -> str:
    encoded = (b64(json.dumps(h).encode()) for h in (header, payload))
    return ".".join([*encoded, signature])


def expired(issuer: TokenIssuer) -> str:
    now = int(time.time())
    # Well past the 10 s leeway for clock skew.
    return issuer.token(iat=now - 360, exp=now - 60)


def tampered_claims(issuer: TokenIssuer) -> str:
    # The signature of one token over the claims of a more powerful one.
    header, _, signature = issuer.token(scope="openid").split(".")
    elevated = b64(json.dumps(issuer.claims(scope="user/*.cruds audit.read")).encode())
    return f"{header}.{elevated}.{signature}"


def tampered_signature(issuer: TokenIssuer) -> str:
    header, payload, signature = issuer.token().split(".")
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    return f"{header}.{payload}.{flipped}"


def alg_none(issuer: TokenIssuer) -> str:
    header = {"alg": "none", "typ": "at+jwt", "kid": issuer.kid}
    return compact(header, issuer.claims(), "")


def hs256_with_the_public_key(issuer: TokenIssuer) -> str:
    # The classic key-confusion forgery (RFC 8725 section 2.1): HMAC keyed with the published
    # public key, hoping the verifier lets the header pick the algorithm.
    secret = issuer.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "at+jwt", "kid": issuer.kid}
    signing_input = compact(header, issuer.claims(), "")[:-1]
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def unknown_kid(issuer: TokenIssuer) -> str:
    return issuer.token(key=new_key(), kid="not-published")


def our_kid_another_key(issuer: TokenIssuer) -> str:
    return issuer.token(key=new_key())


def another_issuer(issuer: TokenIssuer) -> str:
    return issuer.token(iss="https://evil.example")


@EMBEDDED
@pytest.mark.parametrize(
    ("forge", "detail"),
    [
        (expired, "token expired"),
        (tampered_claims, "invalid signature"),
        (tampered_signature, "invalid signature"),
        (alg_none, "algorithm none not allowed (only ES256)"),
        (hs256_with_the_public_key, "algorithm HS256 not allowed (only ES256)"),
        (unknown_kid, "unknown key id"),
        (our_kid_another_key, "invalid signature"),
        (another_issuer, "unexpected issuer 'https://evil.example'"),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
async def test_a_bad_token_gets_401_invalid_token_and_never_reaches_the_service(
    gateway_settings: MakeSettings,
    upstream: RunningDouble,
    issuer: TokenIssuer,
    forge: Callable[[TokenIssuer], str],
    detail: str,
) -> None:
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        response = await client.get(
            "/fhir/Patient", headers={"Authorization": f"Bearer {forge(issuer)}"}
        )
    assert_invalid_token(response, detail)
    assert upstream.seen == []


# --- Tokens that pass, and requests the gateway leaves to the services ----------------------


@EMBEDDED
async def test_a_request_without_a_token_is_forwarded_for_the_service_to_decide(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        responses = [await client.get(p) for p in ("/fhir/Patient", "/.well-known/jwks.json")]
    assert [r.status_code for r in responses] == [200, 200]
    assert [s.path for s in upstream.seen] == ["/fhir/Patient", "/.well-known/jwks.json"]
    assert all(s.header("authorization") is None for s in upstream.seen)


@EMBEDDED
@pytest.mark.parametrize(
    ("path", "audience", "scheme"),
    [
        ("/identity/me", "/identity", "Bearer"),
        ("/.well-known/openid-configuration", "/identity", "Bearer"),
        ("/fhir/Patient/p-1", "/fhir", "Bearer"),
        # The scheme name is case-insensitive (RFC 9110 section 11.1) and still forwarded as sent.
        ("/fhir/Patient/p-2", "/fhir", "bearer"),
        ("/insurance/claims", "/insurance", "Bearer"),
        # One service, two prefixes: a token for either is a token for the service.
        ("/social-security/pensions", "/insurance", "Bearer"),
        ("/audit/records", "/audit", "Bearer"),
    ],
)
async def test_a_valid_token_for_the_routes_service_is_forwarded_byte_for_byte(
    gateway_settings: MakeSettings,
    upstream: RunningDouble,
    issuer: TokenIssuer,
    path: str,
    audience: str,
    scheme: str,
) -> None:
    authorization = f"{scheme} {issuer.token(audience=audience)}"
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        response = await client.get(path, headers={"Authorization": authorization})
    assert response.status_code == 200
    [seen] = upstream.seen
    assert seen.path == path
    assert seen.all("authorization") == [authorization]


@EMBEDDED
@pytest.mark.parametrize(
    ("path", "audience", "expected"),
    [
        ("/identity/me", "/fhir", "/identity"),
        ("/audit/records", "/identity", "/audit"),
        ("/insurance/claims", "/fhir", "/insurance or https://onecard.test/social-security"),
    ],
)
async def test_a_token_for_another_service_gets_401(
    gateway_settings: MakeSettings,
    upstream: RunningDouble,
    issuer: TokenIssuer,
    path: str,
    audience: str,
    expected: str,
) -> None:
    # A token minted for the FHIR store must not open the identity service, even though the
    # same issuer signed it (RFC 9068 section 4: the resource server checks aud).
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        response = await client.get(
            path, headers={"Authorization": issuer.bearer(audience=audience)}
        )
    assert_invalid_token(
        response, f"token is not for this audience (expected https://onecard.test{expected})"
    )
    assert upstream.seen == []


@EMBEDDED
async def test_other_authorization_schemes_pass_through_unchanged(
    gateway_settings: MakeSettings, upstream: RunningDouble
) -> None:
    # Not the gateway's to judge: the service answers for its own schemes.
    basic = "Basic aG9zcGl0YWwtNzpzM2NyM3Q="
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        response = await client.get("/identity/me", headers={"Authorization": basic})
    assert response.status_code == 200
    [seen] = upstream.seen
    assert seen.all("authorization") == [basic]


@EMBEDDED
@pytest.mark.parametrize("second", ["valid", "Basic aG9zcGl0YWw6cw=="])
async def test_two_authorization_headers_get_400(
    gateway_settings: MakeSettings, upstream: RunningDouble, issuer: TokenIssuer, second: str
) -> None:
    # Which one would the service read? The gateway and the service could disagree, so neither
    # is trusted (RFC 9110 section 5.3: Authorization is not a list-valued field).
    other = issuer.bearer() if second == "valid" else second
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        response = await client.get(
            "/fhir/Patient",
            headers=[("Authorization", issuer.bearer()), ("Authorization", other)],
        )
    assert_problem(response, 400, "more than one Authorization header")
    assert response.headers["www-authenticate"] == 'Bearer realm="onecard", error="invalid_request"'
    assert upstream.seen == []


# --- Revocation: refused by the gateway on the very next request ----------------------------


async def test_a_revoked_token_is_refused_on_the_next_request(
    gateway_settings: MakeSettings, upstream: RunningDouble, issuer: TokenIssuer
) -> None:
    settings = gateway_settings(routed(upstream))
    claims = issuer.claims()
    token = "Bearer " + issuer.token(**claims)
    # Written as the identity service writes it: its own connection, the platform's prefix.
    identity_redis = RedisConnection(settings.redis_url or "", prefix=settings.redis_prefix)
    try:
        async with serve_asgi(create_app(settings)) as client:
            before = await client.get("/fhir/Patient", headers={"Authorization": token})
            await Revocations(identity_redis).revoke_token(claims["jti"], claims["exp"])
            after = await client.get("/fhir/Patient", headers={"Authorization": token})
            other = await client.get("/fhir/Patient", headers={"Authorization": issuer.bearer()})
    finally:
        await identity_redis.close()
    assert before.status_code == 200
    assert_invalid_token(after, "token revoked")
    assert other.status_code == 200  # only that token
    assert [s.header("authorization") for s in upstream.seen] == [
        token,
        other.request.headers["authorization"],
    ]


async def test_a_token_of_an_ended_session_is_refused(
    gateway_settings: MakeSettings, upstream: RunningDouble, issuer: TokenIssuer
) -> None:
    token = issuer.bearer(sid="s-logout")
    app = create_app(gateway_settings(routed(upstream)))
    async with serve_asgi(app) as client:
        before = await client.get("/identity/me", headers={"Authorization": token})
        await Revocations(app.state.runtime.redis).revoke_session("s-logout", time.time() + 300)
        after = await client.get("/identity/me", headers={"Authorization": token})
    assert before.status_code == 200
    assert_invalid_token(after, "session ended")
    assert len(upstream.seen) == 1


async def test_a_suspended_card_is_refused_until_it_is_reinstated(
    gateway_settings: MakeSettings, upstream: RunningDouble, issuer: TokenIssuer
) -> None:
    token = issuer.bearer(card="C-0042")
    app = create_app(gateway_settings(routed(upstream)))
    async with serve_asgi(app) as client:
        revocations = Revocations(app.state.runtime.redis)
        before = await client.get("/insurance/claims", headers={"Authorization": token})
        await revocations.set_card_status("C-0042", "suspended")
        suspended = await client.get("/insurance/claims", headers={"Authorization": token})
        # A token without that card (the same holder at a web login, say) is not affected.
        other = await client.get("/insurance/claims", headers={"Authorization": issuer.bearer()})
        await revocations.set_card_status("C-0042", None)
        reinstated = await client.get("/insurance/claims", headers={"Authorization": token})
    assert before.status_code == 200
    assert_invalid_token(suspended, "card C-0042 is suspended")
    assert other.status_code == 200
    assert reinstated.status_code == 200
    assert len(upstream.seen) == 3


# --- When the gateway cannot tell: fail closed, for token holders only -----------------------


@EMBEDDED
@pytest.mark.parametrize("jwks", ["refused", "503"])
async def test_without_signing_keys_a_token_gets_503_and_requests_without_one_pass(
    gateway_settings: MakeSettings, upstream: RunningDouble, issuer: TokenIssuer, jwks: str
) -> None:
    jwks_url = dead_url() if jwks == "refused" else issuer.down_jwks_url
    settings = gateway_settings(routed(upstream), jwks_url=jwks_url)
    async with serve_asgi(create_app(settings)) as client:
        with_token = await client.get("/fhir/Patient", headers={"Authorization": issuer.bearer()})
        without = await client.get("/fhir/Patient")
    assert_problem(with_token, 503, "cannot verify tokens right now: signing keys unavailable")
    assert with_token.headers["retry-after"] == "1"
    assert without.status_code == 200
    [seen] = upstream.seen
    assert seen.header("authorization") is None


@EMBEDDED
async def test_a_redis_that_hangs_refuses_token_holders_promptly(
    gateway_settings: MakeSettings, upstream: RunningDouble, issuer: TokenIssuer
) -> None:
    # Redis accepts and never answers: revocation status is unknown, so a token is refused
    # (fail closed), and without each caller waiting out the Redis client's 2 s socket timeout.
    with silent_server() as redis:
        settings = gateway_settings(routed(upstream), redis_url=f"redis://127.0.0.1:{redis.port}/0")
        async with serve_asgi(create_app(settings)) as client:
            waits = []
            for _ in range(2):
                started = time.monotonic()
                response = await client.get(
                    "/fhir/Patient", headers={"Authorization": issuer.bearer()}
                )
                waits.append(time.monotonic() - started)
    assert_problem(response, 503, "cannot verify tokens right now: revocation status unavailable")
    assert max(waits) < 2.0
    assert upstream.seen == []


@EMBEDDED
async def test_public_metadata_ignores_a_token_sent_along(
    gateway_settings: MakeSettings, upstream: RunningDouble, issuer: TokenIssuer
) -> None:
    # Discovery and keys are public: a client that attaches its FHIR token to every request
    # must still be able to read them.
    async with serve_asgi(create_app(gateway_settings(routed(upstream)))) as client:
        response = await client.get(
            "/.well-known/openid-configuration",
            headers={"Authorization": issuer.bearer(audience="/fhir")},
        )
    assert response.status_code == 200
    assert [s.path for s in upstream.seen] == ["/.well-known/openid-configuration"]
