"""What crosses the wire when clients are registered (RFC 7591 dynamic registration, trimmed)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from identity.clients.models import ClientKind
from identity.scopes import PURPOSES
from services.kit.auth import check_scope_syntax
from services.kit.tokens import load_jwk


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    kind: ClientKind
    # RFC 7591 section 2 "jwks": the one EC P-256 key the client signs its assertions with.
    jwk: dict[str, Any]
    scopes: list[str] = Field(min_length=1, max_length=64)
    facility: str | None = Field(default=None, max_length=200)
    purpose: str | None = None

    @field_validator("jwk")
    @classmethod
    def _public_p256(cls, jwk: dict[str, Any]) -> dict[str, Any]:
        load_jwk(jwk)  # raises ValueError naming what is wrong (kty, crv, private member ...)
        if not isinstance(jwk.get("kid"), str) or not jwk["kid"]:
            raise ValueError("the JWK needs a kid: client assertions name their key by it")
        return {k: jwk[k] for k in ("kty", "crv", "x", "y", "kid")}

    @field_validator("scopes")
    @classmethod
    def _known_syntax(cls, scopes: list[str]) -> list[str]:
        return sorted({check_scope_syntax(s) for s in scopes})

    @field_validator("purpose")
    @classmethod
    def _known_purpose(cls, purpose: str | None) -> str | None:
        if purpose is not None and purpose not in PURPOSES:
            raise ValueError(f"unknown purpose; one of {', '.join(sorted(PURPOSES))}")
        return purpose


class ClientPublic(BaseModel):
    client_id: str
    name: str
    kind: ClientKind
    scopes: list[str]
    facility: str | None
    purpose: str | None
    active: bool
    created_at: datetime
