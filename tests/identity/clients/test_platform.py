"""Platform services are registered clients that may only append to the audit ledger, and
administrators hold one role each (separation of duties, MLPS 2.0 level 3)."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from identity.app import create_app
from identity.clients.platform import PLATFORM_SERVICES
from identity.settings import IdentitySettings
from services.kit.credentials import TOKEN_PATH, ClientCredentials, ServiceTokens, TokenUnavailable
from services.kit.tokens import unverified_claims
from tests.harness import serve_asgi
from tests.identity.conftest import IdentityService


async def test_in_development_identity_provisions_each_service_once(
    make_identity_settings: Callable[..., IdentitySettings],
) -> None:
    settings = make_identity_settings(environment="development")
    credentials_dir = settings.var_dir / "credentials"
    async with serve_asgi(create_app(settings)):
        pass
    files = {p.stem: p for p in credentials_dir.glob("*.json")}
    assert (
        set(files) == set(PLATFORM_SERVICES) == {"gateway", "identity", "health", "social_security"}
    )
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds a private key
    first = {name: ClientCredentials.load(p).client_id for name, p in files.items()}

    app = create_app(settings)
    async with serve_asgi(app):
        tokens = ServiceTokens(
            credentials_path=files["health"],
            token_url="http://testserver" + TOKEN_PATH,
            audience=settings.public_url + TOKEN_PATH,
            scope="audit.append",
            transport=httpx.ASGITransport(app=app),
        )
        try:
            claims = unverified_claims(await tokens())
            assert await tokens() == await tokens()  # cached until shortly before it expires
        finally:
            await tokens.aclose()
    # A restart reuses what was provisioned.
    assert {n: ClientCredentials.load(p).client_id for n, p in files.items()} == first
    assert claims["sub"] == first["health"]
    assert claims["scope"] == "audit.append"
    assert claims["acr"] == "3"  # an institution's registered key


async def test_outside_development_nothing_is_provisioned(
    make_identity_settings: Callable[..., IdentitySettings],
) -> None:
    settings = make_identity_settings()  # environment "test", as in production
    async with serve_asgi(create_app(settings)):
        pass
    assert not (settings.var_dir / "credentials").exists()


async def test_a_service_without_credentials_gets_no_token(tmp_path: Path) -> None:
    tokens = ServiceTokens(
        credentials_path=tmp_path / "missing.json",
        token_url="http://127.0.0.1:9/identity/oauth2/token",
        audience="http://testserver" + TOKEN_PATH,
        scope="audit.append",
    )
    try:
        with pytest.raises(TokenUnavailable, match="no service credentials"):
            await tokens()
    finally:
        await tokens.aclose()


SYSTEM = ["client.manage", "terminal.manage", "citizen.manage", "card.manage"]


@pytest.mark.parametrize(
    ("kind", "scopes", "why"),
    [
        ("admin", ["client.manage", "audit.read"], "separation of duties"),
        ("admin", ["policy.manage", "audit.read"], "separation of duties"),
        ("admin", ["card.manage", "policy.manage"], "separation of duties"),
        ("admin", ["audit.read", "patient/*.rs"], "only its role's scopes"),
        ("admin", ["policy.manage", "system/*.r"], "only its role's scopes"),
        ("admin", ["citizen.manage", "system/Observation.rs"], "only its role's scopes"),
        ("hospital", ["system/*.cruds", "audit.read"], "need an admin client"),
        ("hospital", ["system/*.cruds", "audit.append"], "only platform services"),
        ("admin", ["audit.read", "audit.append"], "only platform services"),
        ("service", ["audit.append", "audit.read"], "holds only audit.append"),
        ("service", ["audit.append", "system/*.r"], "holds only audit.append"),
    ],
)
async def test_no_client_may_combine_duties(
    identity_service: IdentityService, kind: str, scopes: list[str], why: str
) -> None:
    manager = await identity_service.auth("client.manage")
    response = await identity_service.http.post(
        "/identity/clients",
        json={"name": "x", "kind": kind, "jwk": _jwk(), "scopes": scopes},
        headers=manager,
    )
    assert response.status_code == 422
    assert why in response.json()["detail"]


@pytest.mark.parametrize(
    ("kind", "scopes"),
    [
        ("admin", SYSTEM),
        ("admin", ["policy.manage"]),
        ("admin", ["audit.read"]),
        ("service", ["audit.append"]),
        ("hospital", ["system/*.cruds", "system/Claim.c"]),
    ],
)
async def test_each_role_alone_is_registered(
    identity_service: IdentityService, kind: str, scopes: list[str]
) -> None:
    manager = await identity_service.auth("client.manage")
    response = await identity_service.http.post(
        "/identity/clients",
        json={"name": "x", "kind": kind, "jwk": _jwk(), "scopes": scopes},
        headers=manager,
    )
    assert response.status_code == 201, response.text
    assert response.json()["scopes"] == sorted(scopes)


def _jwk() -> dict[str, str]:
    return ClientCredentials.generate(client_id="x", base_url="http://testserver").jwk
