"""The social_security app in-process, with tokens from a test signer instead of the identity
service (as tests/health/conftest.py does for the FHIR store)."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from sqlmodel.ext.asyncio.session import AsyncSession

from services.kit.tokens import KeySet, StaticKeySource, sign_access_token
from social_security.app import create_app
from social_security.settings import SocialSecuritySettings
from tests.harness import serve_asgi

ISSUER = "http://testserver"
SS_KEY = ec.generate_private_key(ec.SECP256R1())
HOSPITAL = "Provincial People's Hospital"


def token(
    sub: str,
    scope: str,
    *,
    acr: str = "2",
    aud: tuple[str, ...] = ("/insurance", "/social-security"),
    act: dict[str, Any] | None = None,
    card: str | None = None,
    client_id: str | None = None,
) -> str:
    """A signed access token as the identity service would issue it."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": sub,
        "aud": [ISSUER + a for a in aud],
        "exp": now + 300,
        "iat": now,
        "jti": secrets.token_hex(8),
        "client_id": client_id or (act["sub"] if act else sub),
        "scope": scope,
        "acr": acr,
        "amr": ["hwk", "pin"] if acr == "2" else ["pop"],
    }
    if act is not None:
        claims["act"] = act
    if card is not None:
        claims["card"] = card
    return sign_access_token(claims, private_key=SS_KEY, kid="ks")


def citizen_auth(citizen: str, scope: str = "benefits.read") -> dict[str, str]:
    """The citizen's own token from the mobile app (card + PIN)."""
    act = {"sub": "app-test", "purpose": "mobile_app"}
    return {"Authorization": "Bearer " + token(citizen, scope, act=act, card="card-" + citizen)}


def counter_auth(
    citizen: str, *, facility: str = HOSPITAL, purpose: str = "hospital_counter"
) -> dict[str, str]:
    """The holder's token from a card tap (PIN verified) at a hospital's billing counter."""
    act = {"sub": "terminal-counter", "facility": facility, "purpose": purpose}
    scope = "patient/Coverage.rs patient/Claim.cr insurance.settle"
    return {
        "Authorization": "Bearer "
        + token(citizen, scope, act=act, card="card-" + citizen, aud=("/insurance", "/fhir"))
    }


@pytest.fixture
async def ss_app(make_settings: Callable[..., Any]) -> FastAPI:
    app = create_app(make_settings(SocialSecuritySettings, public_url=ISSUER))
    app.state.token_keys = StaticKeySource(KeySet({"ks": SS_KEY.public_key()}))
    return app


@pytest.fixture
async def ss(ss_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The social_security app over ASGI (lifespan run: database migrated, Redis connected)."""
    async with serve_asgi(ss_app) as http:
        yield http


@pytest.fixture
async def ss_session(ss: httpx.AsyncClient, ss_app: FastAPI) -> AsyncIterator[AsyncSession]:
    """A session on the app's migrated database; the test commits what it wants kept."""
    async with ss_app.state.runtime.db.sessionmaker() as session:
        yield session
