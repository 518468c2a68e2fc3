"""Bearer tokens on a service's routes: RFC 6750 challenges, scopes, revocation at once."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI

from services.kit.app import create_service_app
from services.kit.auth import CurrentToken, check_scope_syntax, install, require_token
from services.kit.revocation import Revocations
from services.kit.settings import ServiceSettings
from services.kit.tokens import AccessToken
from tests.harness import serve_asgi
from tests.services.kit.test_tokens import access_token, verifier

router = APIRouter()


@router.get("/me")
async def me(token: CurrentToken) -> dict[str, Any]:
    return {"sub": token.sub, "acr": token.acr, "card": token.card}


@router.get("/observations")
async def observations(
    token: Annotated[AccessToken, Depends(require_token("user/Observation.r"))],
) -> dict[str, str]:
    return {"sub": token.sub}


@router.get("/benefits", dependencies=[Depends(require_token("benefits.read"))])
async def benefits(token: CurrentToken) -> dict[str, str]:
    # Two token dependencies in one request: verified and checked once, same token.
    return {"sub": token.sub}


@router.get("/cards", dependencies=[Depends(require_token("card.manage", "audit.read"))])
async def cards() -> dict[str, str]:
    return {"ok": "yes"}


@asynccontextmanager
async def service(
    make_settings: Callable[..., Any], *, installed: bool = True, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Revocations]]:
    held: list[Revocations] = []

    async def on_startup(app: FastAPI) -> None:
        revocations = Revocations(app.state.runtime.redis)
        held.append(revocations)
        if installed:
            install(app, verifier(), revocations)

    app = create_service_app(
        settings=make_settings(ServiceSettings, **overrides),
        title="auth test",
        routers=[router],
        on_startup=on_startup,
    )
    async with serve_asgi(app) as client:
        yield client, held[0]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int, detail: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == detail


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Basic dXNlcjpwYXNz"}, {"authorization": "Bearer"}],
    ids=["none", "basic", "empty"],
)
async def test_no_bearer_token_gets_a_plain_challenge(
    make_settings: Callable[..., Any], headers: dict[str, str]
) -> None:
    async with service(make_settings) as (client, _):
        response = await client.get("/me", headers=headers)
    assert_problem(
        response, 401, "missing bearer token (send Authorization: Bearer <access token>)"
    )
    # RFC 6750 section 3.1: no error code when no credentials were sent.
    assert response.headers["www-authenticate"] == 'Bearer realm="onecard"'


async def test_an_invalid_token_gets_invalid_token_with_the_reason(
    make_settings: Callable[..., Any],
) -> None:
    now = int(time.time())
    expired = access_token(iat=now - 400, exp=now - 100)
    async with service(make_settings) as (client, _):
        response = await client.get("/me", headers=bearer(expired))
        garbage = await client.get("/me", headers=bearer("not-a-token"))
    assert_problem(response, 401, "token expired")
    assert response.headers["www-authenticate"] == (
        'Bearer realm="onecard", error="invalid_token", error_description="token expired"'
    )
    assert_problem(garbage, 401, "token is not a compact JWS (three base64url parts)")
    assert 'error="invalid_token"' in garbage.headers["www-authenticate"]


async def test_a_good_token_reaches_the_route(make_settings: Callable[..., Any]) -> None:
    async with service(make_settings) as (client, _):
        response = await client.get("/me", headers=bearer(access_token()))
    assert response.status_code == 200
    assert response.json() == {"sub": "p-7f3a9c", "acr": "2", "card": "C-0001"}


async def test_a_missing_scope_is_403_insufficient_scope_naming_it(
    make_settings: Callable[..., Any],
) -> None:
    token = access_token(scope="patient/Observation.rs benefits.read")
    async with service(make_settings) as (client, _):
        response = await client.get("/observations", headers=bearer(token))
        two = await client.get("/cards", headers=bearer(access_token(scope="card.manage")))
    assert_problem(response, 403, "token lacks scope user/Observation.r")
    assert response.headers["www-authenticate"] == (
        'Bearer realm="onecard", error="insufficient_scope", '
        'error_description="requires scope user/Observation.r", scope="user/Observation.r"'
    )
    assert_problem(two, 403, "token lacks scope audit.read")
    assert 'scope="card.manage audit.read"' in two.headers["www-authenticate"]


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/observations", "user/Observation.rs"),
        ("/observations", "user/*.cruds"),
        ("/benefits", "benefits.read"),
        ("/cards", "audit.read card.manage"),
    ],
)
async def test_the_right_scope_is_200(
    make_settings: Callable[..., Any], path: str, scope: str
) -> None:
    async with service(make_settings) as (client, _):
        response = await client.get(path, headers=bearer(access_token(scope=scope)))
    assert response.status_code == 200, response.text


async def test_revocation_takes_effect_on_the_next_request(
    make_settings: Callable[..., Any],
) -> None:
    token = access_token(sid="s-1", card="C-7")
    checked = await verifier().verify(token)
    async with service(make_settings) as (client, revocations):
        assert (await client.get("/me", headers=bearer(token))).status_code == 200

        await revocations.set_card_status("C-7", "suspended")  # reported lost
        assert_problem(await client.get("/me", headers=bearer(token)), 401, "card C-7 is suspended")
        await revocations.set_card_status("C-7", None)  # found again
        assert (await client.get("/me", headers=bearer(token))).status_code == 200

        await revocations.revoke_session("s-1", checked.exp)  # logged out
        assert_problem(await client.get("/me", headers=bearer(token)), 401, "session ended")

        other = access_token(sid="s-2")
        assert (await client.get("/me", headers=bearer(other))).status_code == 200
        await revocations.revoke_token((await verifier().verify(other)).jti, checked.exp)
        response = await client.get("/me", headers=bearer(other))
    assert_problem(response, 401, "token revoked")
    assert 'error_description="token revoked"' in response.headers["www-authenticate"]


async def test_two_authorization_headers_are_a_bad_request(
    make_settings: Callable[..., Any],
) -> None:
    headers = [("authorization", f"Bearer {access_token()}"), ("authorization", "Bearer x")]
    async with service(make_settings) as (client, _):
        response = await client.get("/me", headers=headers)
    assert_problem(response, 400, "more than one Authorization header")
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_without_redis_tokens_are_refused_not_waved_through(
    make_settings: Callable[..., Any],
) -> None:
    # Port 1 on loopback: nothing listens there. Fail closed, as an outage (503).
    async with service(make_settings, redis_url="redis://127.0.0.1:1/0") as (client, _):
        response = await client.get("/me", headers=bearer(access_token()))
    assert_problem(response, 503, "cannot verify tokens right now: revocation status unavailable")
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_a_service_that_forgot_install_answers_500_not_200(
    make_settings: Callable[..., Any],
) -> None:
    async with service(make_settings, installed=False) as (client, _):
        response = await client.get("/me", headers=bearer(access_token()))
    assert response.status_code == 500
    assert "request id" in response.json()["detail"]


@pytest.mark.parametrize("scope", ["user/Observation.x", "Benefits Read", "", "user/observation.r"])
def test_required_scopes_are_checked_when_the_route_is_declared(scope: str) -> None:
    with pytest.raises(ValueError, match="neither a SMART v2 scope nor a platform scope"):
        require_token(scope)
    assert check_scope_syntax("system/Claim.c") == "system/Claim.c"


async def test_the_openapi_document_shows_the_bearer_scheme(
    make_settings: Callable[..., Any],
) -> None:
    async with service(make_settings) as (client, _):
        document = (await client.get("/openapi.json")).json()
    scheme = document["components"]["securitySchemes"]["HTTPBearer"]
    assert scheme == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An RFC 9068 access token from the identity service",
    }
