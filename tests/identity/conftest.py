"""Identity settings for tests: real random secrets (the "test" environment refuses unset ones)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from identity.app import create_app
from identity.clients.bootstrap import add_client
from identity.clients.models import ClientKind
from identity.scopes import SERVICE_SCOPES, role_of
from identity.settings import IdentitySettings
from services.kit.credentials import ClientCredentials
from tests.harness import serve_asgi


def random_secret() -> str:
    """A fresh base64url secret of 32 random bytes, as an operator would generate one."""
    return secrets.token_urlsafe(32)


@pytest.fixture
def make_identity_settings(make_settings: Callable[..., Any]) -> Callable[..., IdentitySettings]:
    """IdentitySettings on this test's backend with secrets of their own; overrides win."""

    def make(**overrides: Any) -> IdentitySettings:
        values: dict[str, Any] = {
            "data_key": random_secret(),
            "blind_index_key": random_secret(),
            "key_encryption_key": random_secret(),
            # The in-process client's base URL: client assertions are addressed to it.
            "public_url": "http://testserver",
        }
        values.update(overrides)
        settings: IdentitySettings = make_settings(IdentitySettings, **values)
        return settings

    return make


ADMIN_SCOPES = ["client.manage", "citizen.manage", "card.manage", "terminal.manage"]


@dataclass
class IdentityService:
    """The whole identity app, in-process, with a way to get tokens as a real client would."""

    app: FastAPI
    http: httpx.AsyncClient
    settings: IdentitySettings

    async def add_client(
        self,
        *,
        kind: ClientKind = ClientKind.ADMIN,
        scopes: list[str] | None = None,
        purpose: str | None = None,
        facility: str | None = None,
    ) -> ClientCredentials:
        return await add_client(
            self.app.state.runtime.db,
            name=f"test {kind} client",
            kind=kind,
            scopes=scopes or ADMIN_SCOPES,
            base_url=self.settings.public_url,
            purpose=purpose,
            facility=facility,
        )

    async def token(self, scope: str, *, kind: ClientKind | None = None) -> str:
        """An access token from a freshly registered client allowed exactly ``scope`` (an
        administrator's for administrators' scopes, a service's for ``audit.append``, else a
        hospital system's: separation of duties allows no other)."""
        scopes = scope.split()
        if kind is None:
            kind = ClientKind.HOSPITAL
            if all(role_of(s) for s in scopes):
                kind = ClientKind.ADMIN
            elif set(scopes) <= SERVICE_SCOPES:
                kind = ClientKind.SERVICE
        credentials = await self.add_client(kind=kind, scopes=scopes)
        return await credentials.fetch_token(self.http, scope)

    async def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(scope)}"}


@pytest.fixture
async def identity_service(
    make_identity_settings: Callable[..., IdentitySettings],
) -> AsyncIterator[IdentityService]:
    settings = make_identity_settings()
    app = create_app(settings)
    async with serve_asgi(app) as http:
        yield IdentityService(app=app, http=http, settings=settings)
