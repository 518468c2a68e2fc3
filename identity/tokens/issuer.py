"""Minting access tokens (RFC 9068) with the current signing key."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from identity.tokens.keys import KeyRing
from services.kit.tokens import MAX_ACCESS_TOKEN_SECONDS, KeySet, StaticKeySource, sign_access_token


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    jti: str
    expires_in: int
    exp: int
    scope: str
    claims: dict[str, Any]


class TokenIssuer:
    """Holds the key ring of this process and mints tokens with its current key.

    The ring is reloaded from the database (the truth) periodically, so a rotation done by the
    command line reaches every identity process; ``keys`` is the verifying side of the same
    ring, for this service's own routes.
    """

    def __init__(self, *, issuer: str, ring: KeyRing, lifetime: int) -> None:
        if not 0 < lifetime <= MAX_ACCESS_TOKEN_SECONDS:
            raise ValueError(f"access tokens live at most {MAX_ACCESS_TOKEN_SECONDS} s")
        self.issuer = issuer
        self.lifetime = lifetime
        self.ring = ring
        self.keys = StaticKeySource(KeySet(ring.published))

    def use(self, ring: KeyRing) -> None:
        self.ring = ring
        self.keys.replace(KeySet(ring.published))

    def issue(
        self,
        *,
        subject: str,
        client_id: str,
        scopes: Iterable[str],
        audience: Sequence[str],
        acr: str,
        amr: Sequence[str],
        act: dict[str, Any] | None = None,
        card: str | None = None,
        sid: str | None = None,
        lifetime: int | None = None,
    ) -> IssuedToken:
        now = int(time.time())
        life = min(lifetime or self.lifetime, self.lifetime)
        jti = secrets.token_urlsafe(16)
        scope = " ".join(sorted(set(scopes)))
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": list(audience),
            "exp": now + life,
            "iat": now,
            "jti": jti,
            "client_id": client_id,
            "scope": scope,
            "acr": acr,
            "amr": list(amr),
        }
        if act is not None:
            claims["act"] = act  # RFC 8693 section 4.1: who acts on the subject's behalf
        if card is not None:
            claims["card"] = card
        if sid is not None:
            claims["sid"] = sid
        token = sign_access_token(claims, private_key=self.ring.private_key, kid=self.ring.kid)
        return IssuedToken(token, jti, life, now + life, scope, claims)
